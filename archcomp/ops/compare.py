"""Comparisons and masks: eq, ne, lt, le, gt, ge (bool results), logical_and, logical_or,
logical_not (bool in, bool out), where and masked_fill (values chosen by a bool mask).

Dtypes: a comparison gives bool whatever it compares; the logical ops take bools only (a mask
from a comparison); where and masked_fill keep the dtype of their values, and refuse a constant
that does not fit it (1.5 into int64). Shapes broadcast as torch broadcasts them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ops.common import (
    FillValue,
    Number,
    broadcast,
    fill_constant,
    need_bool,
    need_fits,
    operands,
)
from archcomp.ops.registry import (
    LowerCtx,
    NoArgs,
    OpArgs,
    OpDef,
    Port,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)

BINARY = (Port("x"), Port("other", optional=True))

# --- eq, ne, lt, le, gt, ge ------------------------------------------------------------------


class CompareArgs(OpArgs):
    """Compare with a second input (``in: [a, b]``) or with a constant: ``{op: gt, scalar: 0}``
    is x > 0."""

    scalar: Number | None = Field(
        default=None, description="a constant to compare with, instead of a second input"
    )


def _compare_shape(name: str) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        xs = operands(ctx, name, ctx.args.scalar)
        return TensorType(broadcast([t.shape for t in xs], ["x", "other"][: len(xs)]), "bool")

    return rule


def _binary_lower(fn: Callable[[Any, Any], Any]) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        other = c.inputs.get("other")
        return c.call(fn, c.x, other if other is not None else c.args.scalar)

    return lower


for _name, _fn, _label, _what in (
    ("eq", operator.eq, "=", "equal to"),
    ("ne", operator.ne, "≠", "not equal to"),
    ("lt", operator.lt, "<", "less than"),
    ("le", operator.le, "≤", "less than or equal to"),
    ("gt", operator.gt, ">", "greater than"),
    ("ge", operator.ge, "≥", "greater than or equal to"),
):
    register(
        OpDef(
            _name,
            CompareArgs,
            _compare_shape(_name),
            Style("arith", _label, "circle"),
            inputs=BINARY,
            lower=_binary_lower(_fn),
            doc=f"Element-wise x {_label} other (or a constant `scalar`): a bool mask, True "
            f"where x is {_what} the other. Shapes broadcast.",
        )
    )

# --- logical_and, logical_or, logical_not ----------------------------------------------------


def _logical_shape(name: str) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        x, other = ctx.get("x"), ctx.get("other")
        assert x is not None and other is not None
        need_bool(x, "x", name)
        need_bool(other, "other", name)
        return TensorType(broadcast([x.shape, other.shape], ["x", "other"]), "bool")

    return rule


def _not_shape(ctx: ShapeCtx) -> TensorType:
    need_bool(ctx.x, "x", "logical_not")
    return ctx.x


for _name, _fn, _label, _doc in (
    ("logical_and", operator.and_, "and", "True where both masks are (x & other)"),
    ("logical_or", operator.or_, "or", "True where either mask is (x | other)"),
):
    register(
        OpDef(
            _name,
            NoArgs,
            _logical_shape(_name),
            Style("arith", _label, "circle"),
            inputs=(Port("x"), Port("other")),
            lower=_binary_lower(_fn),
            doc=f"Element-wise {_name.removeprefix('logical_')} of two bool masks: {_doc}. "
            "Shapes broadcast.",
        )
    )

register(
    OpDef(
        "logical_not",
        NoArgs,
        _not_shape,
        Style("arith", "not", "circle"),
        lower=lambda c: c.call(operator.invert, c.x),
        doc="Element-wise negation of a bool mask (~x).",
    )
)

# --- where, masked_fill ----------------------------------------------------------------------


class WhereArgs(OpArgs):
    """Choose x where the condition holds, else other; a constant ``scalar`` (a number,
    ``"-inf"`` or ``"inf"``) may stand for other."""

    scalar: FillValue | None = Field(
        default=None, description="the value where the condition is False, instead of other"
    )


def _where_shape(ctx: ShapeCtx) -> TensorType:
    cond, x, other, scalar = ctx.get("condition"), ctx.get("x"), ctx.get("other"), ctx.args.scalar
    assert cond is not None and x is not None
    need_bool(cond, "condition", "where")
    if (other is None) == (scalar is None):
        raise ShapeError(
            "where needs exactly one of an input other and a scalar",
            arg="scalar" if scalar is not None else None,
            port="x",
            hint="in: [condition, x, other]; or in: [condition, x] with scalar: 0",
        )
    shapes, ports = [cond.shape, x.shape], ["condition", "x"]
    if other is not None:
        if other.dtype != x.dtype:
            raise ShapeError(
                f"other is {other.dtype} but x is {x.dtype}",
                port="other",
                hint="where keeps the values' dtype: cast one of them ({op: cast, like: ...})",
            )
        shapes.append(other.shape)
        ports.append("other")
    elif x.dtype == "bool":  # torch.where(c, mask, 0) is int64
        raise ShapeError(
            "where with a scalar does not keep bool values (torch makes them int64)",
            arg="scalar",
            hint="combine masks with logical_and / logical_or, or use masked_fill",
        )
    else:
        need_fits(scalar, x.dtype, "scalar", "where")
    return TensorType(broadcast(shapes, ports), x.dtype)


def _where_lower(c: LowerCtx) -> Any:
    import torch

    other = c.inputs.get("other")
    chosen = other if other is not None else fill_constant(c.args.scalar)
    return c.call(torch.where, c.inputs["condition"], c.inputs["x"], chosen)


register(
    OpDef(
        "where",
        WhereArgs,
        _where_shape,
        Style("arith", "Where"),
        inputs=(Port("condition"), Port("x"), Port("other", optional=True)),
        lower=_where_lower,
        doc="x where the bool condition holds, else other (or a constant `scalar`), as "
        "torch.where; the result keeps the values' dtype. Shapes broadcast.",
    )
)


class MaskedFillArgs(OpArgs):
    """Write a constant where the mask is True: ``value: "-inf"`` hides attention scores."""

    value: FillValue = Field(description="the constant: a number, '-inf' or 'inf'")


def _masked_fill_shape(ctx: ShapeCtx) -> TensorType:
    x, mask = ctx.get("x"), ctx.get("mask")
    assert x is not None and mask is not None
    need_bool(mask, "mask", "masked_fill")
    need_fits(ctx.args.value, x.dtype, "value", "masked_fill")
    return TensorType(broadcast([x.shape, mask.shape], ["x", "mask"]), x.dtype)


def _masked_fill_lower(c: LowerCtx) -> Any:
    return c.method("masked_fill", c.x, c.inputs["mask"], fill_constant(c.args.value))


register(
    OpDef(
        "masked_fill",
        MaskedFillArgs,
        _masked_fill_shape,
        Style("arith", "Masked Fill"),
        inputs=(Port("x"), Port("mask")),
        lower=_masked_fill_lower,
        doc="x with a constant `value` (a number, '-inf' or 'inf') where the bool mask is True "
        "(Tensor.masked_fill): a causal or padding mask on attention scores. The mask "
        "broadcasts; the result keeps x's dtype.",
    )
)
