"""Arithmetic on tensors: add, sub, mul, div (folded over a list, with broadcasting and an
optional scalar operand), the element-wise neg, sqrt, rsqrt, exp, pow, clamp, log, floor, abs,
minimum, maximum, the running sum cumsum, and cast (a change of dtype).

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
from archcomp.ops.common import (
    FLOAT_DTYPES,
    DTypeName,
    Number,
    broadcast,
    common_dtype,
    need_fits,
    need_float,
    norm_axis,
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
    ("log", "log", "Element-wise natural logarithm, ln x (T5's log-spaced position buckets)."),
    ("floor", "⌊x⌋", "Element-wise floor: the largest whole number <= x, still a float."),
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

# --- log, floor, abs -------------------------------------------------------------------------


def _abs_shape(ctx: ShapeCtx) -> TensorType:
    if ctx.x.dtype == "bool":
        raise ShapeError("abs does not take a bool tensor (torch refuses it)", port="x")
    return ctx.x


register(
    OpDef(
        "abs",
        NoArgs,
        _abs_shape,
        Style("arith", "|x|", "circle"),
        lower=_torch_fn("abs"),
        doc="Element-wise absolute value |x| (numbers, not bools); keeps the dtype.",
    )
)

# --- minimum, maximum ------------------------------------------------------------------------


class ExtremumArgs(OpArgs):
    """Against a second input (``in: [a, b]``) or a constant: ``{op: minimum, scalar: 31}``
    caps x at 31."""

    scalar: Number | None = Field(
        default=None, description="a constant bound, instead of a second input"
    )


def _extremum_shape(name: str) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        xs = operands(ctx, name, ctx.args.scalar)
        dtype = common_dtype(xs, "other")
        if ctx.args.scalar is not None:
            if dtype == "bool":  # torch.clamp makes int64 of bools
                raise ShapeError(
                    f"{name} with a scalar does not take a bool tensor",
                    port="x",
                    hint="masks combine with logical_and and logical_or",
                )
            need_fits(ctx.args.scalar, dtype, "scalar", name)
        return TensorType(broadcast([t.shape for t in xs], ["x", "other"][: len(xs)]), dtype)

    return rule


def _extremum_lower(name: str) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        import torch

        other = c.inputs.get("other")
        if other is not None:
            return c.call(getattr(torch, name), c.x, other)
        bound = {"minimum": "max", "maximum": "min"}[name]  # a constant bound is a clamp
        return c.call(torch.clamp, c.x, **{bound: c.args.scalar})

    return lower


for _name, _label, _doc in (
    ("minimum", "Min", "Element-wise minimum of two inputs (torch.minimum), or of x and a "
     "constant `scalar` (x capped at it)."),
    ("maximum", "Max", "Element-wise maximum of two inputs (torch.maximum), or of x and a "
     "constant `scalar` (x floored at it)."),
):  # fmt: skip
    register(
        OpDef(
            _name,
            ExtremumArgs,
            _extremum_shape(_name),
            Style("arith", _label),
            inputs=(Port("x"), Port("other", optional=True)),
            lower=_extremum_lower(_name),
            doc=_doc + " Shapes broadcast; both inputs have one dtype, which the result keeps.",
        )
    )

# --- cumsum ----------------------------------------------------------------------------------


class CumsumArgs(OpArgs):
    """The running sum along ``dim``: element i is the sum of elements 0..i."""

    dim: int = Field(description="the dim to sum along (negative counts from the end)")


def _cumsum_shape(ctx: ShapeCtx) -> TensorType:
    x = ctx.x
    norm_axis(ctx.args.dim, x.rank)
    # torch.cumsum promotes integers and bools to int64 (a count of True so far)
    return TensorType(x.shape, x.dtype if x.dtype in FLOAT_DTYPES else "int64")


def _cumsum_lower(c: LowerCtx) -> Any:
    import torch

    return c.call(torch.cumsum, c.x, c.args.dim)


register(
    OpDef(
        "cumsum",
        CumsumArgs,
        _cumsum_shape,
        Style("arith", "Cumsum"),
        lower=_cumsum_lower,
        doc="Running sum along a dim (torch.cumsum): positions from a padding mask, the "
        "experts' slots in a batch. Integers and bools sum to int64.",
    )
)

# --- cast ------------------------------------------------------------------------------------


class CastArgs(OpArgs):
    """Convert to a named ``dtype`` (``int64``, ``float32``, ``bool``, ...), or to the dtype of
    a second input ``like``, which follows the build's dtype (``--dtype bfloat16``)."""

    dtype: DTypeName | None = Field(default=None, description="the dtype to convert to")


def _cast_shape(ctx: ShapeCtx) -> TensorType:
    like, dtype = ctx.get("like"), ctx.args.dtype
    if (like is None) == (dtype is None):
        raise ShapeError(
            "cast needs exactly one of dtype and an input like",
            arg="dtype" if dtype is not None else None,
            hint="{op: cast, dtype: float32}; or in: {x: mask, like: h} to match h",
        )
    return TensorType(ctx.x.shape, like.dtype if like is not None else dtype)


def _cast_lower(c: LowerCtx) -> Any:
    import torch

    like = c.inputs.get("like")
    if like is not None:
        return c.method("to", c.x, c.call(getattr, like, "dtype"))
    return c.method("to", c.x, getattr(torch, c.args.dtype))


register(
    OpDef(
        "cast",
        CastArgs,
        _cast_shape,
        Style("arith", "Cast"),
        inputs=(Port("x"), Port("like", optional=True)),
        lower=_cast_lower,
        doc="Convert to another dtype (Tensor.to): a mask to float32, scaled positions to "
        "int64 (truncating toward zero), or to the dtype of input `like` (the build's float "
        "dtype, bfloat16 included).",
    )
)
