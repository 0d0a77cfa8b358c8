"""What an op looks like in a diagram is declared on the op (its ``Style``): the Graphviz
backend names no op, and a new op drawn from its declarations fuses, loops and labels as the
shipped ones do."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archcomp.backends.graphviz import DrawOptions, plan
from archcomp.ir import TensorType
from archcomp.ir.drawing import Style
from archcomp.ops.registry import PALETTE, REGISTRY, NoArgs, OpDef, ShapeCtx, all_ops, register
from archcomp.passes.pipeline import load_graph

ROOT = Path(__file__).resolve().parent.parent
GRAPHVIZ = ROOT / "archcomp" / "backends" / "graphviz"


def _names_op(node: ast.AST) -> bool:
    """``box.op``, ``n.op.name``: an expression giving an op or its name (``n.op.style`` is
    what the op declares: reading it is the point)."""
    if isinstance(node, ast.Attribute) and node.attr == "name":
        node = node.value
    return isinstance(node, ast.Attribute) and node.attr == "op"


def _strings(node: ast.AST) -> list[str]:
    """A string literal, or the strings of a literal set, tuple or list."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
        return [s for e in node.elts for s in _strings(e)]
    return []


def op_names_in(source: str, ops: set[str], families: set[str]) -> Iterator[str]:
    """Where ``source`` decides something by an op's name: a string literal naming an op
    (unless it is also a colour family, the backend's own words: ``linear``, ``softmax``), a
    dict keyed by op names, or an op compared with (or searched for) a string."""
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        for s in _strings(node) if isinstance(node, ast.Constant) else []:
            if s in ops and s not in families:
                yield f"line {line}: the op name {s!r}"
        if isinstance(node, ast.Dict):
            for k in node.keys:
                for s in _strings(k) if k is not None else []:
                    if s in ops:
                        yield f"line {line}: a dict keyed by the op name {s!r}"
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_names_op(x) for x in sides) and any(_strings(x) for x in sides):
                yield f"line {line}: an op compared with a string: {ast.unparse(node)}"


def test_the_graphviz_backend_names_no_op() -> None:
    ops, families = set(all_ops()), set(PALETTE)
    found = [
        f"{path.name} {where}"
        for path in sorted(GRAPHVIZ.glob("*.py"))
        for where in op_names_in(path.read_text(), ops, families)
    ]
    assert not found, "declare it on the op's Style instead:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "code",
    [
        'if nxt.op != "layer_norm": pass',
        'state = "h, c" if box.op == "lstm" else "h"',
        'x = producer.op.name == "softmax"',  # softmax is also a family: caught by the compare
        'x = "sinusoidal" in n.op.name',
        "x = set(names) == {'add', 'layer_norm'}",
        'RULES = {"multi_head_attention": f}',
    ],
)
def test_the_scan_finds_each_way_of_naming_an_op(code: str) -> None:
    assert list(op_names_in(code, set(all_ops()), set(PALETTE)))


def test_every_family_has_a_colour() -> None:
    for name, op in all_ops().items():
        assert op.style.family in PALETTE, name
        for part in op.style.figure.parts if op.style.figure else ():
            assert part.family in PALETTE, (name, part.id)


# -- Add & Norm -------------------------------------------------------------------------------


def _spec(norm: str) -> dict[str, Any]:
    """A post-norm residual (x + fc(x) -> norm), then the same as a collapsed block."""
    return {
        "archcomp": 1,
        "name": "post_norm",
        "inputs": {"x": {"shape": ["B", 16]}},
        "outputs": {"y": "res"},
        "blocks": {
            "residual": {
                "inputs": ["x", "sub"],
                "nodes": [
                    {"id": "drop", "op": "dropout", "in": "sub", "p": 0.1},
                    {"id": "sum", "op": "add", "in": ["x", "drop"]},
                    {"id": "norm", "op": norm},
                ],
                "outputs": "norm",
            }
        },
        "nodes": [
            {"id": "fc", "op": "linear", "out_features": 16},
            {"id": "sum", "op": "add", "in": ["x", "fc"]},
            {"id": "norm", "op": norm},
            {"id": "fc2", "op": "linear", "out_features": 16},
            {"id": "res", "op": "residual", "in": ["norm", "fc2"]},
        ],
    }


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_a_residual_add_fuses_with_the_norm_after_it(norm: str) -> None:
    d = plan(load_graph(_spec(norm)), DrawOptions())
    assert "sum" not in d.boxes  # the add is drawn inside the norm's box
    assert (d.boxes["norm"].label, d.boxes["norm"].family) == ("Add & Norm", "addnorm")
    assert {(e.src, e.kind) for e in d.edges if e.dst == "norm"} == {
        ("input/x", "residual"),
        ("fc", "data"),
    }
    block = d.boxes["res"]  # add + norm (+ dropout) collapsed: one Add & Norm box
    assert (block.kind, block.label, block.family) == ("block", "Add & Norm", "addnorm")


def test_a_norm_that_does_not_fuse_stays_apart() -> None:
    d = plan(load_graph(_spec("batch_norm")), DrawOptions())
    assert d.boxes["sum"].label == "+" and d.boxes["norm"].label == "Batch Norm"
    assert d.boxes["res"].label == "Residual"  # the block keeps its name


# -- a new op, drawn from its declarations only ----------------------------------------------


def _same(ctx: ShapeCtx) -> TensorType:
    return ctx.x


@pytest.fixture
def new_ops() -> Iterator[None]:
    """Test-only ops: a norm that fuses, a recurrent op with a state, an op naming outputs."""
    ops = [
        OpDef("test_norm", NoArgs, _same, Style("norm", "Test Norm", fuses_add=True)),
        OpDef("test_scan", NoArgs, _same, Style("recurrent", "Scan", state="s")),
        OpDef("test_head", NoArgs, _same, Style("softmax", "Head", output_label="Scores")),
    ]
    for op in ops:
        register(op)
    try:
        yield
    finally:
        for op in ops:
            del REGISTRY[op.name]


def test_a_new_op_is_drawn_from_its_style(new_ops: None) -> None:
    spec = _spec("test_norm")
    spec["nodes"] += [{"id": "scan", "op": "test_scan"}, {"id": "head", "op": "test_head"}]
    spec["outputs"]["probs"] = "head"
    d = plan(load_graph(spec), DrawOptions())
    assert d.boxes["norm"].label == "Add & Norm" and d.boxes["res"].label == "Add & Norm"
    assert [(e.src, e.dst, e.label) for e in d.edges if e.kind == "loop"] == [("scan", "scan", "s")]
    assert d.boxes["output/probs"].label == "Scores"
