"""Arithmetic on tensors: add, sub, mul, div (folded over a list, with broadcasting and an
optional scalar operand), and the element-wise neg, sqrt, rsqrt, exp, pow, clamp.

Result dtypes follow torch's promotion: a float tensor keeps its dtype; an integer or bool
tensor with a float scalar, or under ``div``, gives float32 (torch's default dtype); a bool
tensor with an int scalar gives int64.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ops.common import FLOAT_DTYPES, broadcast, common_dtype, need_float
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

Number = int | float

# --- add, sub, mul, div ----------------------------------------------------------------------


class ScalarArgs(OpArgs):
    """An optional constant operand after the inputs: ``{op: add, scalar: 1e-6}`` is x + 1e-6.
    An int scalar keeps an integer tensor's dtype; a float one makes it float32."""

    scalar: Number | None = Field(default=None, description="a constant operand, after the inputs")


class OrderedScalarArgs(ScalarArgs):
    """``scalar_first: true`` puts the scalar first: ``{op: sub, scalar: 1, scalar_first: true}``
    is 1 - x, ``{op: div, scalar: 1, scalar_first: true}`` is 1 / x."""

    scalar_first: bool = Field(default=False, description="the scalar is the left operand")


def _result_dtype(name: str, dtype: str, scalar: Number | None) -> str:
    if dtype in FLOAT_DTYPES:
        return dtype
    if name == "div" or isinstance(scalar, float):
        return "float32"
    if dtype == "bool" and scalar is not None:
        return "int64"
    return dtype


def _elementwise(name: str) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        xs, scalar = ctx.many("x"), ctx.args.scalar
        if getattr(ctx.args, "scalar_first", False) and scalar is None:
            raise ShapeError(
                "scalar_first needs a scalar", arg="scalar_first", hint="add scalar: 1"
            )
        if len(xs) < (1 if scalar is not None else 2):
            raise ShapeError(
                f"needs at least two inputs, found {len(xs)}",
                port="x",
                hint="list them: in: [a, b]; or give a constant: scalar: 1",
            )
        shape = broadcast([t.shape for t in xs], ["x"] * len(xs))
        dtype = common_dtype(xs, "x")
        if name == "sub" and dtype == "bool":
            raise ShapeError("sub does not take bool tensors (torch refuses '-' on them)", port="x")
        return TensorType(shape, _result_dtype(name, dtype, scalar))

    return rule


def _fold(fn: Callable[[Any, Any], Any]) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        xs: list[Any] = list(c.inputs["x"])
        scalar = c.args.scalar
        if scalar is not None:
            xs = [scalar, *xs] if getattr(c.args, "scalar_first", False) else [*xs, scalar]
        out = xs[0]
        for x in xs[1:]:
            out = c.call(fn, out, x)
        return out

    return lower


_LIST = " Takes a list of inputs, or one input and a constant `scalar`."
_FIRST = " `scalar_first: true` puts the constant on the left."
for _name, _args, _fn, _label, _doc in (
    ("add", ScalarArgs, operator.add, "+", "Element-wise sum x0 + x1 + ..., with broadcasting"
     " (a residual connection)." + _LIST),
    ("sub", OrderedScalarArgs, operator.sub, "−", "Element-wise difference x0 - x1 - ..., with"
     " broadcasting." + _LIST + _FIRST),
    ("mul", ScalarArgs, operator.mul, "×", "Element-wise product x0 * x1 * ..., with"
     " broadcasting." + _LIST),
    ("div", OrderedScalarArgs, operator.truediv, "÷", "Element-wise true division x0 / x1 / ...,"
     " with broadcasting; integer inputs give float32." + _LIST + _FIRST),
):  # fmt: skip
    register(
        OpDef(
            _name,
            _args,
            _elementwise(_name),
            Style("arith", _label, "circle", residual_add=_name == "add"),
            inputs=(Port("x", variadic=True),),
            lower=_fold(_fn),
            doc=_doc,
        )
    )

# --- neg, sqrt, rsqrt, exp, pow, clamp -------------------------------------------------------


def _neg_shape(ctx: ShapeCtx) -> TensorType:
    if ctx.x.dtype == "bool":
        raise ShapeError(
            "neg does not take a bool tensor (torch refuses '-' on it)",
            port="x",
            hint="a mask is inverted by comparison ops, not by neg",
        )
    return ctx.x


def _float_same(what: str) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        need_float(ctx.x, what=what)
        return ctx.x

    return rule


register(
    OpDef(
        "neg",
        NoArgs,
        _neg_shape,
        Style("arith", "−x", "circle"),
        lower=lambda c: c.call(operator.neg, c.x),
        doc="Element-wise negation, -x (numbers, not bools).",
    )
)


def _torch_fn(name: str) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        import torch

        return c.call(getattr(torch, name), c.x)

    return lower


for _name, _label, _doc in (
    ("sqrt", "√", "Element-wise square root."),
    ("rsqrt", "1/√", "Element-wise reciprocal square root, 1 / sqrt(x) (RMSNorm's scale)."),
    ("exp", "exp", "Element-wise exponential, e^x."),
):
    register(
        OpDef(
            _name,
            NoArgs,
            _float_same(_name),
            Style("arith", _label, "circle"),
            lower=_torch_fn(_name),
            doc=_doc + " Needs a floating-point input.",
        )
    )


class PowArgs(OpArgs):
    """Raise each element to a constant ``exponent`` (``2`` squares, ``0.5`` is sqrt)."""

    exponent: Number = Field(description="the constant power")


register(
    OpDef(
        "pow",
        PowArgs,
        _float_same("pow"),
        Style("arith", "Pow"),
        lower=lambda c: c.call(operator.pow, c.x, c.args.exponent),
        doc="Element-wise power x ** exponent (a constant). Needs a floating-point input.",
    )
)


class ClampArgs(OpArgs):
    """Limit each element to ``[min, max]``; either bound may be left out (not both)."""

    min: Number | None = Field(default=None, description="lower bound (none: unbounded)")
    max: Number | None = Field(default=None, description="upper bound (none: unbounded)")


def _clamp_shape(ctx: ShapeCtx) -> TensorType:
    lo, hi = ctx.args.min, ctx.args.max
    if lo is None and hi is None:
        raise ShapeError("clamp needs min, max or both", hint="min: 0, max: 6 (ReLU6)")
    if lo is not None and hi is not None and lo > hi:
        raise ShapeError(f"min ({lo}) is above max ({hi})", arg="max", hint="swap them")
    need_float(ctx.x, what="clamp")
    return ctx.x


def _clamp_lower(c: LowerCtx) -> Any:
    import torch

    bounds = {k: v for k, v in (("min", c.args.min), ("max", c.args.max)) if v is not None}
    return c.call(torch.clamp, c.x, **bounds)


register(
    OpDef(
        "clamp",
        ClampArgs,
        _clamp_shape,
        Style("arith", "Clamp"),
        lower=_clamp_lower,
        doc="Element-wise clamp to [min, max] (either may be left out). Needs a "
        "floating-point input.",
    )
)
