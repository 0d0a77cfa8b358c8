"""Reductions (archcomp/ops/reduce.py): mean and sum. Shapes, result dtypes as torch's,
errors and numerics.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lowering import assert_typed, check_declared, compile_spec, fails, out, run, spec
from numerics import assert_same

from archcomp import load_graph
from archcomp.ir import TensorType
from archcomp.ir.dims import Sym

B, S, H = (Sym.symbol(n) for n in "BSH")


OPS = {"mean": ("arith", "Mean"), "sum": ("arith", "Sum")}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def test_reduce_shapes() -> None:
    assert out("x: [B, S, 64]", "op: mean, dim: 1") == (B, 64)
    S = Sym.symbol("S")
    assert out("x: [B, S, 64]", "op: mean, dim: -1, keepdim: true") == (B, S, 1)
    assert out("x: [B, 3, H, W]", "op: mean, dim: [2, 3]") == (B, 3)  # global average pool
    assert out("x: [B, 3, H, W]", "op: sum, dim: [-1, -2], keepdim: true") == (B, 3, 1, 1)
    assert out("x: [B, 3, H, W]", "op: sum, dim: [3, 0]") == (3, H)
    assert out("x: [B, 3]", "op: mean, dim: [0, 1]") == ()


@pytest.mark.parametrize(
    ("dtype", "result"),
    [("float32", "float32"), ("float16", "float16"), ("int32", "int64"), ("bool", "int64")],
)
def test_sum_dtype_as_torch(dtype: str, result: str) -> None:
    g = load_graph(spec(f"x: {{shape: [B, 4], dtype: {dtype}}}", "- {id: n, op: sum, dim: 1}"))
    assert g.output_types["y"] == TensorType((B,), result)
    assert str(torch.zeros(2, 4, dtype=getattr(torch, dtype)).sum(1).dtype) == f"torch.{result}"


def test_reduce_errors() -> None:
    fails(
        "x: {shape: [B, 4], dtype: int64}",
        "op: mean, dim: 1",
        "mean needs a floating-point input, found int64",
        "mean",
    )
    fails("x: [B, 4]", "op: sum, dim: 2", "dim=2 is out of range for a rank-2 tensor", "2}")
    fails("x: [B, 4]", "op: mean, dim: [0, -3]", "dim=-3 is out of range for a rank-2 tensor", "[0")
    fails(
        "x: [B, 4, 5]",
        "op: sum, dim: [1, -2]",
        "dim 1 appears more than once in dim=[1, -2] (rank-3 input)",
        "[1",
    )
    fails(
        "x: [B, 4]",
        "op: mean, dim: []",
        "'dim': needs at least 1 entry, found []",
        "[]",
    )
    fails("x: [B, 4]", "op: sum", "missing required argument 'dim'", "{id")
    fails(
        "x: [B, 4]",
        "op: sum, dim: 1, keepdim: 1",
        "'keepdim': expected a bool, found int 1",
        "1}",
    )


def test_torch_rejects_repeated_dims() -> None:
    with pytest.raises(RuntimeError, match="appears multiple times"):
        torch.sum(torch.zeros(2, 3, 4), (1, -2))


def test_lower_reduce_numerics() -> None:
    text = spec(
        "x: [2, 3, 5, 4]\n  m: {shape: [2, 7], dtype: bool}\n  i: {shape: [2, 7], dtype: int32}",
        """
        - {id: gap, op: mean, in: x, dim: [2, 3]}
        - {id: mk, op: mean, in: x, dim: -1, keepdim: true}
        - {id: s, op: sum, in: x, dim: [0, -1]}
        - {id: sk, op: sum, in: x, dim: 1, keepdim: true}
        - {id: count, op: sum, in: m, dim: 1}
        - {id: total, op: sum, in: i, dim: [0, 1]}
        """,
        "{gap: gap, mk: mk, s: s, sk: sk, count: count, total: total}",
    )
    g, gm = compile_spec(text)
    x = torch.randn(2, 3, 5, 4)
    m = torch.rand(2, 7) > 0.5
    i = torch.randint(-5, 5, (2, 7), dtype=torch.int32)
    got = run(gm, x, m, i)
    want = {
        "gap": x.mean((2, 3)),
        "mk": x.mean(-1, keepdim=True),
        "s": x.sum((0, -1)),
        "sk": x.sum(1, keepdim=True),
        "count": m.sum(1),
        "total": i.sum((0, 1)),
    }
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert_same(got[k], v, msg=k)
        assert_typed(g, k, v)
    # the generated forward reads as torch code
    assert "gap = torch.mean(x, (2, 3))" in gm.code
    assert "sk = torch.sum(x, 1, keepdim = True)" in gm.code


def test_reduce_in_a_vit_head() -> None:
    """Mean-pool the tokens, then classify: the shape flows through symbolic B and S."""
    text = spec(
        "x: [B, S, 32]",
        """
        - {id: pool, op: mean, dim: 1}
        - {id: n, op: linear, out_features: 10}
        """,
    )
    g, gm = compile_spec(text)
    assert g.output_types["y"] == TensorType((B, 10))
    x = torch.randn(3, 7, 32)
    assert_same(run(gm, x)["y"], F.linear(x.mean(1), gm.n.weight, gm.n.bias))
