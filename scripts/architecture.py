"""Draw docs/architecture.svg: archcomp's layers, their files, and the imports between layers.

    .venv/bin/python scripts/architecture.py     # writes docs/architecture.dot and .svg

The layers and their order come from tests/layer_rules.py (the table tests/test_layers.py
enforces); the arrows are the imports read from the code, counted per pair of layers, so the
picture cannot drift from the code (tests/test_layers.py fails when docs/architecture.dot is
out of date). An arrow points from the importer to what it imports.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import graphviz

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from layer_rules import LAYERS, layer_of, package_sources, read_edges  # noqa: E402


def diagram() -> graphviz.Digraph:
    sources = package_sources(ROOT)
    files: dict[str, list[str]] = collections.defaultdict(list)
    for path in sources:
        layer = layer_of(path)
        name = path.removeprefix("archcomp/").removeprefix(f"{layer}/")
        if not name.endswith("__init__.py") or "/" not in path.removeprefix("archcomp/"):
            files[layer].append(name)
    counts = collections.Counter(
        (layer_of(e.src), layer_of(e.dst))
        for e in read_edges(sources)
        if layer_of(e.src) != layer_of(e.dst)
    )
    g = graphviz.Digraph("archcomp", graph_attr={"rankdir": "TB", "nodesep": "0.35"})
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10")
    g.attr("edge", color="#777777", fontname="Helvetica", fontsize="9")
    for name, what, _ in reversed(LAYERS):  # the top layer first: the picture reads downwards
        listing = "\\l".join(_wrap(sorted(files[name]))) + "\\l"
        g.node(
            name,
            f"{name}\\n{what}\\n\\n{listing}",
            fillcolor="#e8eef7" if name not in ("api", "cli") else "#f6e8c8",
        )
    for (src, dst), n in sorted(counts.items()):
        g.edge(src, dst, label=str(n))
    return g


def _wrap(names: list[str], width: int = 64) -> list[str]:
    lines, line = [], ""
    for n in names:
        if line and len(line) + len(n) + 2 > width:
            lines.append(line)
            line = ""
        line = f"{line}, {n}" if line else n
    return [*lines, line] if line else lines


def main() -> None:
    g = diagram()
    out = ROOT / "docs" / "architecture"
    out.with_suffix(".dot").write_text(g.source)
    out.with_suffix(".svg").write_bytes(g.pipe(format="svg"))
    print(f"wrote {out.with_suffix('.svg').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
