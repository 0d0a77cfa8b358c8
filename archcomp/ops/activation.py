"""Element-wise activations and softmax."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ops.common import need_float, norm_axis
from archcomp.ops.registry import LowerCtx, NoArgs, OpArgs, OpDef, ShapeCtx, Style, register


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
        Style("softmax", "Softmax"),
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
