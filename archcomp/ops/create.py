"""Tensors made from sizes, for masks and position tables built in the graph instead of passed
in: arange (positions 0..n-1, n from a dim of an input: symbolic ``T`` stays ``T``), and triu,
tril (the triangles of a matrix: a causal mask).

Dtypes: arange gives int64 unless told otherwise; triu and tril keep their input's.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Sym, add, floordiv, fmt_shape, sub
from archcomp.ops.common import DTypeName, norm_axis
from archcomp.ops.registry import (
    LowerCtx,
    OpArgs,
    OpDef,
    Port,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)

# --- arange ----------------------------------------------------------------------------------


class ArangeArgs(OpArgs):
    """Positions ``start, start+step, ...`` below ``end``, as torch.arange. The end is an int,
    the name of a symbolic dim of the input (``end: T`` for an input [B, T, d]), or the size of
    the input's dim ``dim``; the input also gives the device."""

    end: int | str | None = Field(
        default=None, description="the bound (excluded): an int, or a symbolic dim of the input"
    )
    dim: int | None = Field(
        default=None, description="instead of end: the input's size along this dim"
    )
    start: int = Field(default=0, description="the first value")
    step: int = Field(default=1, description="the difference between neighbours (not 0)")
    dtype: DTypeName = Field(default="int64", description="the result's dtype")


def _arange_end(ctx: ShapeCtx) -> tuple[Dim, int | None]:
    """The end and, when it comes from the input, the index of the input dim it is."""
    a, like = ctx.args, ctx.x
    if (a.end is None) == (a.dim is None):
        raise ShapeError(
            "arange needs exactly one of end and dim",
            arg="end" if a.end is not None else None,
            hint="end: 16, end: T (a symbolic dim of the input), or dim: 1 (its size)",
        )
    if a.dim is not None:
        axis = norm_axis(a.dim, like.rank)
        return like.shape[axis], axis
    if isinstance(a.end, int):
        return a.end, None
    target = Sym.symbol(a.end)
    found = next((i for i, d in enumerate(like.shape) if d == target), None)
    if found is None:
        raise ShapeError(
            f"'{a.end}' is not a dim of the input {fmt_shape(like.shape)}",
            arg="end",
            hint="name one of the input's symbolic dims, or give dim: the axis",
        )
    return target, found


def _arange_shape(ctx: ShapeCtx) -> TensorType:
    a = ctx.args
    if a.step == 0:
        raise ShapeError("step must not be 0", arg="step")
    if a.dtype == "bool":
        raise ShapeError(
            "arange does not make bools (torch refuses it)",
            arg="dtype",
            hint="compare positions to make a mask: {op: gt, in: [key, query]}",
        )
    end, _ = _arange_end(ctx)
    if isinstance(end, int):
        n: Dim = len(range(a.start, end, a.step))
        if n == 0:
            raise ShapeError(
                f"arange from {a.start} to {end} by {a.step} is empty",
                arg="step" if a.step != 1 else "end",
            )
    elif a.step > 0:  # ceil((end - start) / step)
        n = floordiv(add(sub(end, a.start), a.step - 1), a.step)
    else:
        raise ShapeError(
            f"a negative step counts down to a concrete end, found symbolic '{end}'",
            arg="step",
            hint="count up from 0 and subtract: {op: sub, scalar: ..., scalar_first: true}",
        )
    return TensorType((n,), a.dtype)


def _arange_lower(c: LowerCtx) -> Any:
    import torch

    a, like = c.args, c.x
    _, axis = _arange_end(ShapeCtx(a, c.in_types))
    end: Any = a.end if axis is None else c.method("size", like, axis)  # a run-time size
    device = c.call(getattr, like, "device")
    extra = (end, a.step) if a.step != 1 else (end,)
    begin = (a.start, *extra) if a.start != 0 or a.step != 1 else extra
    return c.call(torch.arange, *begin, dtype=getattr(torch, a.dtype), device=device)


register(
    OpDef(
        "arange",
        ArangeArgs,
        _arange_shape,
        Style("shape", "Arange"),
        inputs=(Port("like"),),
        lower=_arange_lower,
        doc="Positions start, start+step, ... below end (torch.arange), int64 by default; end "
        "is an int or a dim of the input (`end: T`, or `dim: 1`), so a mask or a table of "
        "relative positions is built for any sequence length. The input gives the device.",
    )
)

# --- triu, tril ------------------------------------------------------------------------------


class TriangleArgs(OpArgs):
    """Keep one triangle of the last two dims, zeroing (False-ing) the rest. ``diagonal`` shifts
    the border: 0 is the main diagonal, 1 the one above it."""

    diagonal: int = Field(default=0, description="the border diagonal: 0 main, >0 above, <0 below")


def _triangle_shape(name: str) -> Any:
    def rule(ctx: ShapeCtx) -> TensorType:
        if ctx.x.rank < 2:
            raise ShapeError(
                f"{name} needs a matrix (at least 2 dims), found {fmt_shape(ctx.x.shape)}",
                port="x",
            )
        return ctx.x

    return rule


def _triangle_lower(name: str) -> Any:
    def lower(c: LowerCtx) -> Any:
        import torch

        fn = getattr(torch, name)
        return c.call(fn, c.x, c.args.diagonal) if c.args.diagonal else c.call(fn, c.x)

    return lower


for _name, _label, _doc in (
    ("triu", "Triu", "The upper triangle of the last two dims (torch.triu): elements on and "
     "above `diagonal`, zero (False) below."),
    ("tril", "Tril", "The lower triangle of the last two dims (torch.tril): elements on and "
     "below `diagonal`, zero (False) above."),
):  # fmt: skip
    register(
        OpDef(
            _name,
            TriangleArgs,
            _triangle_shape(_name),
            Style("shape", _label),
            lower=_triangle_lower(_name),
            doc=_doc + " Any dtype; a bool matrix of ones gives a causal mask.",
        )
    )
