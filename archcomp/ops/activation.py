"""Element-wise activations (relu ... mish), glu, and softmax."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ops.common import div_exact, need_float, norm_axis
from archcomp.ops.registry import (
    LowerCtx,
    NoArgs,
    OpArgs,
    OpDef,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)


def _same(ctx: ShapeCtx) -> TensorType:
    need_float(ctx.x)
    return ctx.x


def _pointwise(fn_name: str) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        import torch
        import torch.nn.functional as F

        fn = getattr(torch, fn_name, None) or getattr(F, fn_name)
        return c.call(fn, c.x)

    return lower


for _name, _label in [("relu", "ReLU"), ("tanh", "Tanh"), ("sigmoid", "Sigmoid"), ("silu", "SiLU")]:
    register(
        OpDef(
            _name,
            NoArgs,
            _same,
            Style("activation", _label),
            lower=_pointwise(_name),
            doc=f"{_label}, element-wise.",
        )
    )


class GeluArgs(OpArgs):
    """GELU; ``approximate: tanh`` selects the tanh approximation (GPT-2's 'gelu_new')."""

    approximate: str = Field(default="none", pattern="^(none|tanh)$")


def _gelu_lower(c: LowerCtx) -> Any:
    import torch.nn.functional as F

    return c.call(F.gelu, c.x, approximate=c.args.approximate)


register(
    OpDef(
        "gelu",
        GeluArgs,
        _same,
        Style("activation", "GELU"),
        lower=_gelu_lower,
        doc="GELU, element-wise.",
    )
)


def _quick_gelu_lower(c: LowerCtx) -> Any:
    import torch

    # x * sigmoid(1.702 x), as CLIP's QuickGELUActivation writes it
    gate = c.call(torch.sigmoid, c.call(torch.mul, c.x, 1.702))
    return c.call(torch.mul, c.x, gate)


register(
    OpDef(
        "quick_gelu",
        NoArgs,
        _same,
        Style("activation", "QuickGELU"),
        lower=_quick_gelu_lower,
        doc="GELU's sigmoid approximation x * sigmoid(1.702 x) (CLIP's quick_gelu), element-wise.",
    )
)


class LeakyReluArgs(OpArgs):
    """Leaky ReLU: x for x >= 0, ``negative_slope * x`` below."""

    negative_slope: float = Field(default=0.01, description="slope for negative inputs")


class EluArgs(OpArgs):
    """ELU: x for x > 0, ``alpha * (exp(x) - 1)`` below."""

    alpha: float = Field(default=1.0, description="scale of the negative part")


class SoftplusArgs(OpArgs):
    """Softplus: ``log(1 + exp(beta * x)) / beta``; linear above ``threshold`` (as torch)."""

    beta: float = Field(default=1.0, gt=0, description="sharpness")
    threshold: float = Field(default=20.0, gt=0, description="beta * x above it is linear")


class GluArgs(OpArgs):
    """GLU: split ``dim`` in halves a, b; ``a * sigmoid(b)``. The dim's size must be even."""

    dim: int = Field(default=-1, description="the dim to halve (default: the last)")


def _with_args(fn_name: str, *names: str) -> Callable[[LowerCtx], Any]:
    """``F.<fn>(x, k=v)`` for the args that differ from their defaults (short forward code)."""

    def lower(c: LowerCtx) -> Any:
        import torch.nn.functional as F

        defaults = type(c.args).model_fields
        kw = {n: getattr(c.args, n) for n in names if getattr(c.args, n) != defaults[n].default}
        return c.call(getattr(F, fn_name), c.x, **kw)

    return lower


def _glu_shape(ctx: ShapeCtx) -> TensorType:
    x = ctx.x
    need_float(x, what="glu")
    axis = norm_axis(ctx.args.dim, x.rank)
    half = div_exact(x.shape[axis], 2)
    if half is None:
        raise ShapeError(
            f"glu halves dim {axis}, but its size {x.shape[axis]} is not even",
            arg="dim",
            port="x",
        )
    return TensorType((*x.shape[:axis], half, *x.shape[axis + 1 :]), x.dtype)


for _name, _args, _label, _names, _doc in (
    ("leaky_relu", LeakyReluArgs, "Leaky ReLU", ("negative_slope",), "Leaky ReLU, element-wise."),
    ("elu", EluArgs, "ELU", ("alpha",), "ELU, element-wise."),
    ("softplus", SoftplusArgs, "Softplus", ("beta", "threshold"), "Softplus, element-wise."),
    ("hardswish", NoArgs, "Hardswish", (), "Hardswish (MobileNetV3), element-wise."),
    ("mish", NoArgs, "Mish", (), "Mish, x * tanh(softplus(x)), element-wise."),
):
    register(
        OpDef(
            _name,
            _args,
            _same,
            Style("activation", _label),
            lower=_with_args(_name, *_names),
            doc=_doc,
        )
    )
register(
    OpDef(
        "glu",
        GluArgs,
        _glu_shape,
        Style("activation", "GLU"),
        lower=_with_args("glu", "dim"),
        doc="Gated linear unit: halves a dim into a, b and gives a * sigmoid(b).",
    )
)


class SoftmaxArgs(OpArgs):
    """Softmax over ``dim`` (default: the last)."""

    dim: int = -1


def _softmax_shape(ctx: ShapeCtx) -> TensorType:
    need_float(ctx.x)
    norm_axis(ctx.args.dim, ctx.x.rank)
    return ctx.x


def _softmax_lower(fn_name: str) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        import torch

        return c.call(getattr(torch, fn_name), c.x, dim=c.args.dim)

    return lower


register(
    OpDef(
        "softmax",
        SoftmaxArgs,
        _softmax_shape,
        Style("softmax", "Softmax", output_label="Output Probabilities"),
        lower=_softmax_lower("softmax"),
        doc="Softmax over a dim.",
    )
)
register(
    OpDef(
        "log_softmax",
        SoftmaxArgs,
        _softmax_shape,
        Style("softmax", "Log Softmax"),
        lower=_softmax_lower("log_softmax"),
        doc="Log-softmax over a dim.",
    )
)
