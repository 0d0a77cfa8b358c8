"""Reductions over dims: mean, sum. No parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ops.common import FLOAT_DTYPES, INT_DTYPES, norm_axis
from archcomp.ops.registry import LowerCtx, OpArgs, OpDef, ShapeCtx, ShapeError, Style, register


class ReduceArgs(OpArgs):
    """Reduce over ``dim`` (one dim or a list); ``keepdim`` keeps each reduced dim as size 1."""

    dim: Union[int, Annotated[list[int], Field(min_length=1)]] = Field(
        description="the dim to reduce, or a list of dims (negative counts from the end)"
    )
    keepdim: bool = Field(default=False, description="keep each reduced dim, with size 1")


def _reduce_shape(name: str) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        x, a = ctx.x, ctx.args
        if name == "mean" and x.dtype not in FLOAT_DTYPES:
            raise ShapeError(
                f"mean needs a floating-point input, found {x.dtype}",
                port="x",
                hint="sum takes integers and bools (counting)",
            )
        dims = a.dim if isinstance(a.dim, list) else [a.dim]
        axes: set[int] = set()
        for d in dims:
            axis = norm_axis(d, x.rank)
            if axis in axes:
                raise ShapeError(
                    f"dim {axis} appears more than once in dim={a.dim} (rank-{x.rank} input)",
                    arg="dim",
                )
            axes.add(axis)
        if a.keepdim:
            shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
        else:
            shape = tuple(s for i, s in enumerate(x.shape) if i not in axes)
        # torch.sum promotes integers and bools to int64
        dtype = (
            "int64" if name == "sum" and (x.dtype in INT_DTYPES or x.dtype == "bool") else x.dtype
        )
        return TensorType(shape, dtype)

    return rule


def _reduce_lower(name: str) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        import torch

        a = c.args
        fn = torch.mean if name == "mean" else torch.sum
        dim = tuple(a.dim) if isinstance(a.dim, list) else a.dim
        if a.keepdim:
            return c.call(fn, c.x, dim, keepdim=True)
        return c.call(fn, c.x, dim)

    return lower


for _name, _label in (("mean", "Mean"), ("sum", "Sum")):
    register(
        OpDef(
            _name,
            ReduceArgs,
            _reduce_shape(_name),
            Style("arith", _label),
            lower=_reduce_lower(_name),
            doc=f"{_label} over one dim or a list of dims (torch.{_name}), optionally keeping them"
            " as size 1."
            + (" Needs a floating-point input." if _name == "mean" else " Integers sum to int64."),
        )
    )
