"""Seconds per 1,000 nodes for each stage of check and build, on generated specs of 1k, 5k and
20k nodes (20k is the limit), and the ratio of the 20k time to the 1k time (linear: about 20).

Run: .venv/bin/python benchmarks/bench_scale.py [SIZES...] [--shape chain,fanout,nested,repeats]

Shapes: ``chain`` (a straight chain of linear and relu), ``fanout`` (every node reads the
input, then a tree of adds joins them), ``nested`` (a block nested 16 deep, repeated),
``repeats`` (a three-node block repeated n/3 times). Stages, in order (CPU seconds of this
process, the best of a few runs):

- ``parse``: YAML reading and schema validation (``load_source``)
- ``expand``: params, imports, blocks and repeats written out (``to_graph``)
- ``passes``: structure, ties, initializers (every pass but shapes)
- ``shapes``: shape inference
- ``lower``: module construction and fx graph building (``build_graph`` less ``codegen``)
- ``codegen``: the forwards' Python source generated and compiled: the block classes' while
  building, the model's when it is first called (measured after ``artifact``,
  ``model.make_code()``); ``archcomp build`` never calls it
- ``summary``: the table ``archcomp build`` prints (the build's activations traced on meta)
- ``artifact``: hashing and writing the safetensors file

``check`` is parse to shapes; ``build`` is every stage but the model's forward (what
``archcomp build`` does).

A shared machine's load changes CPU seconds too (caches, frequency), so each table ends with
``/ref``: the largest size's stage times divided by a fixed reference measured in the same
run, the CPU seconds of constructing a hand-written ``nn.Sequential`` of 20,000 layers
(``nn.Linear(4, 4)`` and ``nn.ReLU()`` alternating): ratios compare across machines and loads.
"""

from __future__ import annotations

import argparse
import functools
import gc
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch.fx.graph
import torch.fx.graph_module

import archcomp.backends.torch.codegen as codegen
from archcomp.backends.torch.artifact import save_artifact
from archcomp.backends.torch.summary import summarize
from archcomp.base.errors import Reporter
from archcomp.base.gcpause import paused
from archcomp.frontend.build import load_source, to_graph
from archcomp.passes.pipeline import PASSES

STAGES = ("parse", "expand", "passes", "shapes", "lower", "codegen", "summary", "artifact")
CHECK = STAGES[:4]
FORWARD = "forward"  # the model's generated forward, counted as codegen but not in build
HEAD = "archcomp: 1\nname: big\ninputs: {x: [B, 4]}\n"


def chain(n: int) -> str:
    """linear, relu, linear, relu, ... in one straight line."""
    nodes = [
        f"  - {{id: n{i}, op: linear, out_features: 4}}\n"
        if i % 2 == 0
        else f"  - {{id: n{i}, op: relu}}\n"
        for i in range(n)
    ]
    return HEAD + "nodes:\n" + "".join(nodes) + f"outputs: n{n - 1}\n"


def fanout(n: int) -> str:
    """n/2 nodes all reading the input, joined pairwise by a tree of adds."""
    leaves = n // 2
    lines = [f"  - {{id: r{i}, op: relu, in: x}}\n" for i in range(leaves)]
    level, k = [f"r{i}" for i in range(leaves)], 0
    while len(level) > 1:
        nxt = []
        for a, b in zip(level[::2], level[1::2], strict=False):
            lines.append(f"  - {{id: s{k}, op: add, in: [{a}, {b}]}}\n")
            nxt.append(f"s{k}")
            k += 1
        level = nxt + ([level[-1]] if len(level) % 2 else [])
    return HEAD + "nodes:\n" + "".join(lines) + f"outputs: {level[0]}\n"


DEPTH = 16


def nested(n: int) -> str:
    """Blocks b0..b15, each holding the one below and a relu, the top one repeated."""
    blocks = [
        "  b0:\n    inputs: [x]\n    nodes:\n"
        "      - {id: fc, op: linear, out_features: 4}\n"
        "      - {id: act, op: relu}\n    outputs: act\n"
    ]
    for d in range(1, DEPTH):
        blocks.append(
            f"  b{d}:\n    inputs: [x]\n    nodes:\n"
            f"      - {{id: inner, op: b{d - 1}}}\n"
            "      - {id: act, op: relu}\n    outputs: act\n"
        )
    per_copy = DEPTH + 1  # nodes of one copy (the blocks themselves are scopes)
    top = f"  - {{id: layers, op: b{DEPTH - 1}, repeat: {max(n // per_copy, 1)}}}\n"
    return HEAD + "blocks:\n" + "".join(blocks) + "nodes:\n" + top + "outputs: layers\n"


def repeats(n: int) -> str:
    """A residual block of three nodes repeated n/3 times."""
    block = (
        "blocks:\n  res:\n    inputs: [x]\n    nodes:\n"
        "      - {id: fc, op: linear, out_features: 4}\n"
        "      - {id: act, op: relu}\n"
        "      - {id: out, op: add, in: [x, act]}\n    outputs: out\n"
    )
    top = f"  - {{id: layers, op: res, repeat: {max(n // 3, 1)}}}\n"
    return HEAD + block + "nodes:\n" + top + "outputs: layers\n"


SHAPES: dict[str, Callable[[int], str]] = {
    "chain": chain,
    "fanout": fanout,
    "nested": nested,
    "repeats": repeats,
}


class Clock:
    """CPU seconds per stage, each counted once: time in a nested stage is its own."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.stack: list[list[Any]] = []  # [stage, started, seconds taken by inner stages]

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        frame: list[Any] = [name, time.process_time(), 0.0]
        self.stack.append(frame)
        try:
            yield
        finally:
            self.stack.pop()
            took = time.process_time() - frame[1]
            self.spent[name] += took - frame[2]
            if self.stack:
                self.stack[-1][2] += took

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return fn(*args, **kwargs)

        return timed


@contextmanager
def codegen_timed(clock: Clock) -> Iterator[None]:
    """Count fx's source generation and its compile() as ``codegen`` wherever they run."""
    saved = (
        torch.fx.graph.Graph.python_code,
        torch.fx.graph_module._forward_from_src,
        codegen._forward_from_src,
    )
    torch.fx.graph.Graph.python_code = clock.wrap("codegen", saved[0])  # type: ignore[method-assign]
    torch.fx.graph_module._forward_from_src = clock.wrap("codegen", saved[1])
    codegen._forward_from_src = clock.wrap("codegen", saved[2])
    try:
        yield
    finally:
        (
            torch.fx.graph.Graph.python_code,  # type: ignore[method-assign]
            torch.fx.graph_module._forward_from_src,
            codegen._forward_from_src,
        ) = saved


def run_once(text: str, out: Path) -> tuple[dict[str, float], int]:
    """Every stage once on ``text``; CPU seconds per stage and the number of nodes."""
    from archcomp.api import build_graph

    clock = Clock()
    gc.collect()
    with codegen_timed(clock), paused():  # as load_graph runs them
        with clock.stage("parse"):
            prog = load_source(text)
        rep = Reporter()
        with clock.stage("expand"):
            g = to_graph(prog, {}, rep)
        for p in PASSES:
            with clock.stage("shapes" if p.name == "shapes" else "passes"):
                p.run(g, rep)
        rep.raise_if_failed()
    with codegen_timed(clock):
        with clock.stage("lower"):
            model = build_graph(g, seed=0)
        with clock.stage("summary"):
            summarize(g, model)  # as archcomp build: its model, weights on meta
        with clock.stage("artifact"):
            save_artifact(model, out)
        before = clock.spent["codegen"]
        with clock.stage("codegen"):
            model.make_code()  # what its first call does
        clock.spent[FORWARD] = clock.spent["codegen"] - before
    return clock.spent, len(g.nodes)


def reference(runs: int) -> float:
    """CPU seconds (the best of ``runs``) of a 20,000-layer nn.Sequential of Linear and ReLU."""
    best = 1e9
    for _ in range(runs):
        gc.collect()
        start = time.process_time()
        layers = [torch.nn.Linear(4, 4) if i % 2 == 0 else torch.nn.ReLU() for i in range(20_000)]
        torch.nn.Sequential(*layers)
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[1_000, 5_000, 20_000])
    ap.add_argument("--shape", default=",".join(SHAPES), help="comma-separated shapes")
    ap.add_argument("--runs", type=int, default=2, help="runs per size (the best is kept)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_once(chain(50), Path(tmp) / "warm.safetensors")  # imports, op registry
        ref = reference(args.runs)
        print(f"reference: a 20,000-layer nn.Sequential takes {ref:.3f} CPU seconds to construct")
        for shape in args.shape.split(","):
            _table(shape, args.sizes, args.runs, Path(tmp) / "m.safetensors", ref)


def _table(shape: str, sizes: list[int], runs: int, out: Path, ref: float) -> None:
    print(f"\n{shape}: CPU seconds per 1,000 nodes (the best of {runs} runs)")
    print(f"{'nodes':>7} " + " ".join(f"{s:>8}" for s in (*STAGES, "check", "build")))
    totals: dict[int, dict[str, float]] = {}
    for n in sizes:
        text = SHAPES[shape](n)
        best: dict[str, float] = {}
        nodes = 0
        for _ in range(runs):
            spent, nodes = run_once(text, out)
            best = {s: min(best.get(s, 1e9), spent[s]) for s in (*STAGES, FORWARD)}
        forward = best.pop(FORWARD)
        best["check"] = sum(best[s] for s in CHECK)
        best["build"] = sum(best[s] for s in STAGES) - forward
        totals[nodes] = best
        print(f"{nodes:>7} " + " ".join(f"{v * 1000 / nodes:>8.3f}" for v in best.values()))
    hi = max(totals)
    print(f"{'seconds':>7} " + " ".join(f"{v:>8.3f}" for v in totals[hi].values()))
    print(f"{'/ref':>7} " + " ".join(f"{v / ref:>8.2f}" for v in totals[hi].values()))
    if len(totals) > 1:
        lo = min(totals)
        label = f"x{hi / lo:.0f}"
        print(
            f"{label:>7} "
            + " ".join(f"{totals[hi][s] / max(totals[lo][s], 1e-6):>8.1f}" for s in totals[hi])
        )


if __name__ == "__main__":
    main()
