"""How long `check` takes on generated specs of 1,000 to 10,000 nodes (goal: 10k in < 1 s).

Run: .venv/bin/python benchmarks/bench_check.py
Prints the time per size and per node, so linear growth is visible.
"""

from __future__ import annotations

import sys
import time

from archcomp.passes.pipeline import load_graph


def generate(n: int) -> str:
    """A residual MLP of n nodes: linear, relu, add repeated, written out node by node."""
    lines = ["archcomp: 1", "name: big", "inputs:", "  x: [B, 64]", "nodes:"]
    prev = "x"
    i = 0
    while i < n - 1:
        lines.append(f"  - {{id: fc{i}, op: linear, out_features: 64, in: {prev}}}")
        lines.append(f"  - {{id: act{i}, op: relu, in: fc{i}}}")
        lines.append(f"  - {{id: res{i}, op: add, in: [{prev}, act{i}]}}")
        prev = f"res{i}"
        i += 3
    lines.append(f"outputs: {prev}")
    return "\n".join(lines) + "\n"


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1_000, 2_500, 5_000, 10_000]
    print(f"{'nodes':>8} {'seconds':>9} {'us/node':>9}")
    for n in sizes:
        text = generate(n)
        load_graph(text)  # warm caches (op registry, imports)
        best = min(_time(text) for _ in range(3))
        g = load_graph(text)
        print(f"{len(g.nodes):>8} {best:>9.3f} {best / len(g.nodes) * 1e6:>9.1f}")


def _time(text: str) -> float:
    t0 = time.perf_counter()
    load_graph(text)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
