"""Learned tensors: ``parameter`` (a free learned tensor, an op with no input whose result is
its weight) and ``layer_scale`` (a learned gain per channel)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Shape, prod
from archcomp.ops.common import need_float, norm_axis
from archcomp.ops.registry import LowerCtx, OpArgs, OpDef, ShapeCtx, Style, register

Size = Annotated[int, Field(gt=0)]


class ParameterArgs(OpArgs):
    """A learned tensor of the given ``shape`` (positive ints): a class token [1, 1, d], learned
    queries [n, d], a layer-scale gain [d]. Its initializer is the node's ``init`` (default
    N(0, 1), as an embedding). It takes no input; broadcast it to the batch with ``expand``."""

    shape: list[Size] = Field(min_length=1, max_length=8, description="sizes (positive ints)")


def _parameter_shape(ctx: ShapeCtx) -> TensorType:
    return TensorType(tuple(ctx.args.shape), "float32")


def _parameter_params(a: ParameterArgs) -> dict[str, Shape]:
    return {"weight": tuple(a.shape)}


def _parameter_lower(c: LowerCtx) -> Any:
    from archcomp.nn.parameter import LearnedTensor

    return c.module(LearnedTensor(tuple(c.args.shape), **c.factory))()


PARAMETER = register(
    OpDef(
        "parameter",
        ParameterArgs,
        _parameter_shape,
        Style("embedding", "Parameter"),
        inputs=(),
        params=_parameter_params,
        lower=_parameter_lower,
        doc="A free learned tensor of a declared shape (class token, learned queries, "
        "layer-scale); no input. Its weight is initialised by the node's init (default N(0, 1)).",
    )
)


class LayerScaleArgs(OpArgs):
    """``x * gamma`` with a learned ``gamma`` per channel along ``dim``; ``num_features`` (the
    channel count) is inferred."""

    dim: int = Field(default=-1, description="the channel axis (-1: channels last)")
    init_value: float = Field(
        default=1e-6, description="gamma's initial value (ConvNeXt 1e-6; DINOv2 1.0)"
    )
    num_features: int | None = Field(
        default=None, gt=0, description="inferred: the size of the channel axis"
    )


def _layer_scale_shape(ctx: ShapeCtx) -> TensorType:
    x = ctx.x
    need_float(x, what="layer_scale")
    axis = norm_axis(ctx.args.dim, x.rank)
    ctx.infer("num_features", ctx.concrete(x.shape[axis], f"the channel dim (dim {axis})", "x"))
    return x


def _layer_scale_lower(c: LowerCtx) -> Any:
    from archcomp.nn.parameter import LayerScale

    a = c.args
    return c.module(LayerScale(a.num_features, a.dim, a.init_value, **c.factory))(c.x)


LAYER_SCALE = register(
    OpDef(
        "layer_scale",
        LayerScaleArgs,
        _layer_scale_shape,
        Style("arith", "Layer Scale"),
        params=lambda a: {"gamma": (a.num_features or 0,)},
        macs=lambda a, ins, outs: prod(outs["out"].shape),
        lower=_layer_scale_lower,
        doc="Per-channel learned gain x * gamma (CaiT's LayerScale; ConvNeXt, DINOv2), gamma "
        "initialised to init_value.",
    )
)
