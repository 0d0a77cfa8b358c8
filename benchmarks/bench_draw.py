"""Benchmark of the diagram backend (printed, not asserted; see docs/diagrams.md).

- the GPT-3-sized spec (96 layers) drawn collapsed, target under 2 s;
- a fully expanded 1,000-box graph (112 distinct blocks of 10 ops, --depth 99), target
  under 10 s.

Each line splits the time into checking the spec, planning the drawing (IR -> DOT) and
Graphviz's layout to SVG. Run: ``.venv/bin/python benchmarks/bench_draw.py``.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archcomp.backends.graphviz import DrawOptions, plan, to_graphviz  # noqa: E402
from archcomp.backends.graphviz.render import run_dot  # noqa: E402
from archcomp.passes.pipeline import load_graph  # noqa: E402


def wide_spec(blocks: int = 112) -> dict[str, Any]:
    """Distinct (not repeated) residual blocks of 10 ops each: about 1,000 boxes when open."""
    body = [
        {"id": "ln", "op": "layer_norm"},
        {"id": "fc1", "op": "linear", "out_features": 64},
        {"id": "act", "op": "gelu"},
        {"id": "fc2", "op": "linear", "out_features": 32},
        {"id": "drop", "op": "dropout", "p": 0.1},
        {"id": "res", "op": "add", "in": ["x", "drop"]},
        {"id": "ln2", "op": "layer_norm"},
        {"id": "fc3", "op": "linear", "out_features": 32},
        {"id": "act2", "op": "relu"},
        {"id": "fc4", "op": "linear", "out_features": 32},
    ]
    return {
        "archcomp": 1,
        "name": "wide",
        "inputs": {"x": ["B", 32]},
        "blocks": {"unit": {"inputs": ["x"], "nodes": body, "outputs": "fc4"}},
        "nodes": [{"id": f"b{i}", "op": "unit"} for i in range(blocks)],
        "outputs": {"y": f"b{blocks - 1}"},
    }


def bench(name: str, spec: Any, opts: DrawOptions, target: float) -> None:
    t0 = time.perf_counter()
    g = load_graph(spec)
    t1 = time.perf_counter()
    d = plan(g, opts)
    source = to_graphviz(d).source
    t2 = time.perf_counter()
    if shutil.which("dot"):
        run_dot(source, "svg", timeout=120)
        layout = f"{time.perf_counter() - t2:6.2f} s"
    else:
        layout = "   (no dot)"
    t3 = time.perf_counter()
    total = t3 - t1
    print(
        f"{name:34} {len(g.nodes):6} nodes {len(d.boxes):5} boxes | check {t1 - t0:5.2f} s | "
        f"draw {t2 - t1:5.2f} s | dot {layout} | draw+dot {total:5.2f} s "
        f"(target < {target:g} s: {'ok' if total < target else 'SLOW'})"
    )


def main() -> None:
    bench("gpt3 collapsed", ROOT / "specs" / "gpt3.yaml", DrawOptions(), 2.0)
    bench("gpt3 --depth 99", ROOT / "specs" / "gpt3.yaml", DrawOptions(depth=99), 2.0)
    bench(
        "1,000-box graph, fully expanded",
        wide_spec(),
        DrawOptions(depth=99, dropout=True),
        10.0,
    )


if __name__ == "__main__":
    main()
