"""Selection by index: gather, argmax, argmin, topk (values and their indices), scatter_add,
index_add (sums into positions), one_hot. What a router, a sampler or a relative-position
table needs.

Dtypes: indices are int64, both as results (argmax, argmin, topk's indices, one_hot) and as
inputs (gather, scatter_add, index_add refuse any other dtype, as torch does); selected values
keep their dtype.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, fmt_shape
from archcomp.ops.common import need_index, norm_axis
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


class DimArgs(OpArgs):
    """The dim the indices point along."""

    dim: int = Field(description="the dim indexed (negative counts from the end)")


def _fits(inner: TensorType, outer: TensorType, skip: int | None, ports: tuple[str, str]) -> None:
    """``inner`` (an index) has ``outer``'s rank and is no larger in any dim but ``skip``: equal
    dims, or concrete ones no larger (a symbolic difference cannot be checked, so is refused)."""
    a, b = ports
    if inner.rank != outer.rank:
        raise ShapeError(
            f"{a} {fmt_shape(inner.shape)} and {b} {fmt_shape(outer.shape)} have different ranks",
            port=a,
            hint=f"give {a} one dim per dim of {b} (size 1 where it picks one element)",
        )
    for i, (d, e) in enumerate(zip(inner.shape, outer.shape, strict=True)):
        if i == skip or d == e or (isinstance(d, int) and isinstance(e, int) and d <= e):
            continue
        known = isinstance(d, int) and isinstance(e, int)
        raise ShapeError(
            f"{a} {fmt_shape(inner.shape)} {'is' if known else 'may be'} larger than {b} "
            f"{fmt_shape(outer.shape)} at dim {i} ({d} vs {e})",
            port=a,
            hint=(f"outside dim {skip}, " if skip is not None else "")
            + f"{a} may be no larger than {b}"
            + ("" if known else "; sizes that differ must both be concrete"),
        )


# --- gather ----------------------------------------------------------------------------------


def _gather_shape(ctx: ShapeCtx) -> TensorType:
    x, index = ctx.get("x"), ctx.get("index")
    assert x is not None and index is not None
    need_index(index, "index", "gather")
    dim = norm_axis(ctx.args.dim, x.rank)
    _fits(index, x, dim, ("index", "x"))
    return TensorType(index.shape, x.dtype)


def _gather_lower(c: LowerCtx) -> Any:
    import torch

    return c.call(torch.gather, c.x, c.args.dim, c.inputs["index"])


register(
    OpDef(
        "gather",
        DimArgs,
        _gather_shape,
        Style("shape", "Gather"),
        inputs=(Port("x"), Port("index")),
        lower=_gather_lower,
        doc="out[i][j] = x[i][index[i][j]] along `dim` (torch.gather): the result has the "
        "int64 index's shape and x's dtype.",
    )
)

# --- argmax, argmin --------------------------------------------------------------------------


class ArgArgs(DimArgs):
    """The position of the extreme value along ``dim``; ``keepdim`` keeps that dim as size 1."""

    keepdim: bool = Field(default=False, description="keep the reduced dim, with size 1")


def _arg_shape(name: str) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        x, a = ctx.x, ctx.args
        if x.dtype == "bool":
            raise ShapeError(
                f"{name} does not take a bool tensor (torch refuses it)",
                port="x",
                hint="cast it first: {op: cast, dtype: int64}",
            )
        axis = norm_axis(a.dim, x.rank)
        shape = tuple(
            1 if i == axis else d for i, d in enumerate(x.shape) if a.keepdim or i != axis
        )
        return TensorType(shape, "int64")

    return rule


def _arg_lower(name: str) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        import torch

        fn = getattr(torch, name)
        if c.args.keepdim:
            return c.call(fn, c.x, c.args.dim, keepdim=True)
        return c.call(fn, c.x, c.args.dim)

    return lower


for _name, _label, _what in (("argmax", "ArgMax", "largest"), ("argmin", "ArgMin", "smallest")):
    register(
        OpDef(
            _name,
            ArgArgs,
            _arg_shape(_name),
            Style("shape", _label),
            lower=_arg_lower(_name),
            doc=f"The int64 index of the {_what} value along `dim` (torch.{_name}; the first "
            "one on ties).",
        )
    )

# --- topk ------------------------------------------------------------------------------------


class TopkArgs(OpArgs):
    """The ``k`` largest (or smallest) values along ``dim``, and where they were."""

    k: int = Field(gt=0, description="how many to keep")
    dim: int = Field(default=-1, description="the dim to select along (default: the last)")
    largest: bool = Field(default=True, description="the largest values (false: the smallest)")
    sorted: bool = Field(default=True, description="in order, best first")


def _topk_shape(ctx: ShapeCtx) -> dict[str, TensorType]:
    x, a = ctx.x, ctx.args
    if x.dtype == "bool":
        raise ShapeError("topk does not take a bool tensor (torch refuses it)", port="x")
    axis = norm_axis(a.dim, x.rank)
    d: Dim = x.shape[axis]
    if isinstance(d, int) and a.k > d:
        raise ShapeError(
            f"k={a.k} is larger than dim {axis} of {fmt_shape(x.shape)} ({d})",
            arg="k",
            hint=f"at most {d}",
        )
    shape = (*x.shape[:axis], a.k, *x.shape[axis + 1 :])
    return {"values": TensorType(shape, x.dtype), "indices": TensorType(shape, "int64")}


def _topk_lower(c: LowerCtx) -> Any:
    import torch

    a = c.args
    flags = {k: v for k, v in (("largest", a.largest), ("sorted", a.sorted)) if not v}
    both = c.call(torch.topk, c.x, a.k, a.dim, **flags)
    return {
        "values": c.call(operator.getitem, both, 0),
        "indices": c.call(operator.getitem, both, 1),
    }


register(
    OpDef(
        "topk",
        TopkArgs,
        _topk_shape,
        Style("shape", "Top-k"),
        results=("values", "indices"),
        lower=_topk_lower,
        doc="The k largest values along `dim` (torch.topk) as result `values`, and their int64 "
        "positions as `indices` (a router's chosen experts: `router.indices`).",
    )
)

# --- scatter_add, index_add ------------------------------------------------------------------


def _same_dtype(x: TensorType, src: TensorType, port: str, what: str) -> None:
    if src.dtype != x.dtype:
        raise ShapeError(
            f"{what}: {port} is {src.dtype} but x is {x.dtype}",
            port=port,
            hint="cast one of them: {op: cast, like: ...}",
        )


def _scatter_add_shape(ctx: ShapeCtx) -> TensorType:
    x, index, src = ctx.get("x"), ctx.get("index"), ctx.get("src")
    assert x is not None and index is not None and src is not None
    need_index(index, "index", "scatter_add")
    _same_dtype(x, src, "src", "scatter_add")
    dim = norm_axis(ctx.args.dim, x.rank)
    _fits(index, src, None, ("index", "src"))
    _fits(index, x, dim, ("index", "x"))
    return x


def _scatter_add_lower(c: LowerCtx) -> Any:
    import torch

    return c.call(torch.scatter_add, c.x, c.args.dim, c.inputs["index"], c.inputs["src"])


register(
    OpDef(
        "scatter_add",
        DimArgs,
        _scatter_add_shape,
        Style("shape", "Scatter Add"),
        inputs=(Port("x"), Port("index"), Port("src")),
        lower=_scatter_add_lower,
        doc="x with src added at the int64 index along `dim`: out[i][index[i][j]] += "
        "src[i][j] (torch.scatter_add; repeated indices add up). The result is x's shape.",
    )
)


def _index_add_shape(ctx: ShapeCtx) -> TensorType:
    x, index, src = ctx.get("x"), ctx.get("index"), ctx.get("src")
    assert x is not None and index is not None and src is not None
    need_index(index, "index", "index_add")
    _same_dtype(x, src, "src", "index_add")
    dim = norm_axis(ctx.args.dim, x.rank)
    if index.rank != 1:
        raise ShapeError(
            f"index_add needs a 1-D index, found {fmt_shape(index.shape)}",
            port="index",
            hint="flatten it: {op: flatten, start_dim: 0}",
        )
    want = (*x.shape[:dim], index.shape[0], *x.shape[dim + 1 :])
    if src.shape != want:
        raise ShapeError(
            f"src is {fmt_shape(src.shape)}; index_add along dim {dim} of x "
            f"{fmt_shape(x.shape)} with {index.shape[0]} indices needs {fmt_shape(want)}",
            port="src",
        )
    return x


def _index_add_lower(c: LowerCtx) -> Any:
    import torch

    return c.call(torch.index_add, c.x, c.args.dim, c.inputs["index"], c.inputs["src"])


register(
    OpDef(
        "index_add",
        DimArgs,
        _index_add_shape,
        Style("shape", "Index Add"),
        inputs=(Port("x"), Port("index"), Port("src")),
        lower=_index_add_lower,
        doc="x with slice i of src added at position index[i] along `dim` (torch.index_add; a "
        "1-D int64 index, repeats add up): tokens summed back to their rows after experts.",
    )
)

# --- one_hot ---------------------------------------------------------------------------------


class OneHotArgs(OpArgs):
    """A new last dim of ``num_classes``, 1 at each id's position, 0 elsewhere."""

    num_classes: int = Field(gt=0, description="the size of the new last dim (ids below it)")


def _one_hot_shape(ctx: ShapeCtx) -> TensorType:
    need_index(ctx.x, "x", "one_hot")
    return TensorType((*ctx.x.shape, ctx.args.num_classes), "int64")


def _one_hot_lower(c: LowerCtx) -> Any:
    from torch.nn import functional

    return c.call(functional.one_hot, c.x, c.args.num_classes)


register(
    OpDef(
        "one_hot",
        OneHotArgs,
        _one_hot_shape,
        Style("shape", "One-Hot"),
        lower=_one_hot_lower,
        doc="int64 ids to int64 one-hot vectors of num_classes (F.one_hot): [B, S] -> "
        "[B, S, num_classes]. Cast to float to multiply.",
    )
)
