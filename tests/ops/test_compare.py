"""Comparisons and masks (archcomp/ops/compare.py): eq, ne, lt, le, gt, ge, logical_and,
logical_or, logical_not, where, masked_fill. Values, dtypes and gradients against the torch
calls on the same tensors; shapes, dtype rules and located errors.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import pytest
import torch
from lowering import check_declared, check_torch, compile_for_test, fails, out, spec

from archcomp import load_graph
from archcomp.ir.dims import Sym

B, T = (Sym.symbol(n) for n in "BT")

OPS = {
    "eq": ("arith", "="),
    "ne": ("arith", "≠"),
    "lt": ("arith", "<"),
    "le": ("arith", "≤"),
    "gt": ("arith", ">"),
    "ge": ("arith", "≥"),
    "logical_and": ("arith", "and"),
    "logical_or": ("arith", "or"),
    "logical_not": ("arith", "not"),
    "where": ("arith", "Where"),
    "masked_fill": ("arith", "Masked Fill"),
}

COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def _ints(*shape: int) -> torch.Tensor:
    return torch.randint(-2, 3, shape, generator=torch.Generator().manual_seed(len(shape)))


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool])
def test_comparisons_are_torchs_and_give_bool(op: str, dtype: torch.dtype) -> None:
    fn = COMPARE[op]
    x, y = _ints(2, 3, 4).to(dtype), _ints(3, 1).to(dtype)  # ties included; y broadcasts
    check_torch(f"op: {op}, in: [x, y]", fn, {"x": x, "y": y})
    check_torch(f"op: {op}, scalar: 1", lambda x: fn(x, 1), {"x": x})
    if dtype != torch.bool:
        check_torch(f"op: {op}, scalar: 0.5", lambda x: fn(x, 0.5), {"x": x})


def test_mixed_dtypes_compare_as_torch_promotes_them() -> None:
    x, y = _ints(2, 3).float() / 2, _ints(2, 3)
    check_torch("op: lt, in: [x, y]", operator.lt, {"x": x, "y": y})


def _masks(*shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape))) > 0.5


@pytest.mark.parametrize(
    "op, fn", [("logical_and", torch.logical_and), ("logical_or", torch.logical_or)]
)
def test_logical_ops_are_torchs(op: str, fn: Callable[..., torch.Tensor]) -> None:
    check_torch(f"op: {op}, in: [x, y]", fn, {"x": _masks(2, 3, 4), "y": _masks(3, 1)})


def test_logical_not_is_torchs() -> None:
    check_torch("op: logical_not", torch.logical_not, {"x": _masks(2, 5)})


def test_where_keeps_the_values_dtype_and_passes_gradients() -> None:
    cond, x, y = _masks(3, 4), torch.randn(2, 3, 4), torch.randn(4)
    check_torch("op: where, in: [c, x, y]", torch.where, {"c": cond, "x": x, "y": y})
    check_torch(
        "op: where, in: [c, x], scalar: -inf",
        lambda c, x: torch.where(c, x, float("-inf")),
        {"c": cond, "x": x},
    )
    ids = _ints(3, 4)
    check_torch(
        "op: where, in: [c, x], scalar: 7", lambda c, x: torch.where(c, x, 7), {"c": cond, "x": ids}
    )


def test_masked_fill_is_torchs_with_gradients() -> None:
    x, mask = torch.randn(2, 3, 4), _masks(3, 4)
    check_torch(
        "op: masked_fill, in: [x, m], value: -inf",
        lambda x, m: x.masked_fill(m, float("-inf")),
        {"x": x, "m": mask},
    )
    check_torch(
        "op: masked_fill, in: [x, m], value: 0.25",
        lambda x, m: x.masked_fill(m, 0.25),
        {"x": x, "m": mask},
    )
    check_torch(
        "op: masked_fill, in: [x, m], value: -1",
        lambda x, m: x.masked_fill(m, -1),
        {"x": _ints(3, 4), "m": mask},
    )


def test_a_wrong_reference_fails() -> None:
    """The check catches a planted bug: > for >=, a mask inverted, a wrong fill."""
    x = _ints(3, 4).float()
    with pytest.raises(AssertionError):
        check_torch("op: ge, scalar: 0", lambda x: x > 0, {"x": x})
    m = _masks(3, 4)
    with pytest.raises(AssertionError):
        check_torch("op: where, in: [c, x], scalar: 0", lambda c, x: torch.where(~c, x, 0.0),
                    {"c": m, "x": torch.randn(3, 4)})  # fmt: skip
    with pytest.raises(AssertionError):
        check_torch("op: masked_fill, in: [x, m], value: -1.0e4",
                    lambda x, m: x.masked_fill(m, -1e5), {"x": x, "m": m})  # fmt: skip


def test_masks_read_as_written() -> None:
    g = load_graph(
        spec(
            "x: [B, T]\n  m: {shape: [B, T], dtype: bool}",
            """
            - {id: pos, op: gt, in: x, scalar: 0}
            - {id: keep, op: logical_and, in: [pos, m]}
            - {id: drop, op: logical_not, in: keep}
            - {id: n, op: masked_fill, in: {x: x, mask: drop}, value: -inf}
            """,
        )
    )
    code = compile_for_test(g).code
    for line in ("pos = x > 0", "keep = pos & m", "drop = ~keep", "x.masked_fill(drop, -inf)"):
        assert line in code, code


def test_shapes_broadcast_and_dtypes_follow() -> None:
    assert out("x: [B, T, 4]\n  y: [T, 1]", "op: ge, in: [x, y]") == (B, T, 4)
    g = load_graph(
        spec(
            "x: [B, T]\n  y: {shape: [B, T], dtype: int64}",
            """
            - {id: c, op: ne, in: [x, y]}
            - {id: n, op: where, in: [c, y], scalar: 0}
            """,
        )
    )
    assert str(g.output_types["y"]) == "[B, T] int64"
    assert str(g.nodes["c"].outputs["out"]) == "[B, T] bool"


MASK = "x: [B, T]\n  m: {shape: [B, T], dtype: bool}"


def test_errors_are_located() -> None:
    fails("x: [B, T]", "op: gt", "gt needs a second input or a scalar", "gt")
    fails(
        "x: [B, T]\n  y: [B, T]",
        "op: lt, in: [x, y], scalar: 1",
        "lt has both a second input and a scalar",
        "1}",
    )
    fails(
        "x: [B, T]\n  y: [B, 4]",
        "op: eq, in: [x, y]",
        "shapes [B, T] and [B, 4] do not match at dim -1 (T vs 4)",
        "[x, y]",
    )
    fails(
        MASK,
        "op: logical_and, in: [m, x]",
        "logical_and needs a bool other, found float32",
        "[m, x]",
    )
    fails(
        "x: [B, T]", "op: logical_not", "logical_not needs a bool x, found float32", "logical_not"
    )
    fails(
        "x: [B, T]", "op: where, in: [x, x, x]", "where needs a bool condition, found float32", "[x"
    )
    fails(
        MASK,
        "op: where, in: [m, x]",
        "where needs exactly one of an input other and a scalar",
        "[m",
    )
    fails(
        MASK + "\n  i: {shape: [B, T], dtype: int64}",
        "op: where, in: [m, x, i]",
        "other is int64 but x is float32",
        "[m",
    )
    fails(
        MASK + "\n  y: [B, 3]",
        "op: where, in: [m, x, y]",
        "shapes [B, T] and [B, T] and [B, 3] do not match at dim -1 (T vs 3)",
        "[m",
    )
    fails(
        "m: {shape: [B, T], dtype: bool}\n  i: {shape: [B, T], dtype: int64}",
        "op: masked_fill, in: [i, m], value: -inf",
        "masked_fill: value -inf is not a whole number, and the values are int64",
        "-inf}",
    )
    fails(
        "x: [B, T]",
        "op: masked_fill, in: [x, x], value: 0",
        "masked_fill needs a bool mask, found float32",
        "[x",
    )
    fails(
        "m: {shape: [B, T], dtype: bool}",
        "op: where, in: [m, m], scalar: 0",
        "where with a scalar does not keep bool values (torch makes them int64)",
        "0}",
    )
    fails(
        "m: {shape: [B, T], dtype: bool}",
        "op: masked_fill, in: [m, m], value: 2",
        "masked_fill: value 2 is not 0 or 1, the values of a bool",
        "2}",
    )  # fmt: skip
