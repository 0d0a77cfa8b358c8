"""Normalization and regularization: layer_norm, rms_norm, batch_norm, group_norm,
instance_norm, dropout.

MACs of a norm count one multiply-add per element (the normalize-and-scale ``(x - mean) * k``
or ``x * gamma + beta``); the mean and variance reductions are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Shape, fmt_shape, prod
from archcomp.ops.common import need_float
from archcomp.ops.registry import (
    LowerCtx,
    Lowering,
    OpArgs,
    OpDef,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)


def _numel(a: Any, ins: Any, outs: dict[str, TensorType]) -> Dim:
    return prod(outs["out"].shape)


class LayerNormArgs(OpArgs):
    """Layer norm over the last dim; ``normalized_shape`` (its size) is inferred."""

    eps: float = Field(default=1e-5, gt=0, description="added to the variance")
    elementwise_affine: bool = Field(default=True, description="learned weight (and bias)")
    bias: bool = Field(default=True, description="learned bias, with elementwise_affine")
    normalized_shape: int | None = Field(
        default=None, gt=0, description="inferred: the size of the last dim"
    )


def _layer_norm_shape(ctx: ShapeCtx) -> TensorType:
    x = ctx.x
    need_float(x, what="layer_norm")
    if x.rank < 1:
        raise ShapeError("layer_norm needs at least one dim, found a scalar", port="x")
    ctx.infer("normalized_shape", ctx.concrete(x.shape[-1], "the last dim (normalized_shape)", "x"))
    return x


def _layer_norm_params(a: LayerNormArgs) -> dict[str, Shape]:
    d = a.normalized_shape or 0
    if not a.elementwise_affine:
        return {}
    return {"weight": (d,), "bias": (d,)} if a.bias else {"weight": (d,)}


def _layer_norm_lower(c: LowerCtx) -> Any:
    from torch import nn

    a = c.args
    norm = nn.LayerNorm(
        a.normalized_shape,
        eps=a.eps,
        elementwise_affine=a.elementwise_affine,
        bias=a.bias,
        **c.factory,
    )
    return c.module(norm)(c.x)


register(
    OpDef(
        "layer_norm",
        LayerNormArgs,
        _layer_norm_shape,
        Style("norm", "Layer Norm", fuses_add=True),
        params=_layer_norm_params,
        macs=_numel,
        lower=_layer_norm_lower,
        doc="Layer normalization over the last dim.",
    )
)


class RMSNormArgs(OpArgs):
    """RMS norm over the last dim (Zhang & Sennrich, 2019; Llama, T5): ``x / sqrt(mean(x^2) +
    eps) * weight``, no mean subtraction, no bias. ``normalized_shape`` (its size) is inferred.
    """

    eps: float = Field(
        default=1e-6,
        gt=0,
        description="added to the mean square (Llama 2, Mistral: 1e-6; Llama 3: 1e-5)",
    )
    elementwise_affine: bool = Field(default=True, description="learned weight (the gain g)")
    offset: float = Field(
        default=0.0,
        description="gain offset: (offset + weight) * x_normed, in float32 (Gemma: 1, weight "
        "initialised to 1 - offset = 0); 0: torch.nn.RMSNorm",
    )
    normalized_shape: int | None = Field(
        default=None, gt=0, description="inferred: the size of the last dim"
    )


def _rms_norm_shape(ctx: ShapeCtx) -> TensorType:
    x = ctx.x
    need_float(x, what="rms_norm")
    if x.rank < 1:
        raise ShapeError("rms_norm needs at least one dim, found a scalar", port="x")
    if ctx.args.offset and not ctx.args.elementwise_affine:
        raise ShapeError(
            "rms_norm's offset is added to its weight, but elementwise_affine is false",
            arg="offset",
            hint="drop offset, or set elementwise_affine: true",
        )
    ctx.infer("normalized_shape", ctx.concrete(x.shape[-1], "the last dim (normalized_shape)", "x"))
    return x


def _rms_norm_params(a: RMSNormArgs) -> dict[str, Shape]:
    return {"weight": (a.normalized_shape or 0,)} if a.elementwise_affine else {}


def _rms_norm_lower(c: LowerCtx) -> Any:
    from torch import nn

    a = c.args
    if a.offset:
        from archcomp.nn.norm import OffsetRMSNorm

        return c.module(OffsetRMSNorm(a.normalized_shape, a.eps, a.offset, **c.factory))(c.x)
    norm = nn.RMSNorm(
        a.normalized_shape, eps=a.eps, elementwise_affine=a.elementwise_affine, **c.factory
    )
    return c.module(norm)(c.x)


register(
    OpDef(
        "rms_norm",
        RMSNormArgs,
        _rms_norm_shape,
        Style("norm", "RMS Norm", fuses_add=True),
        params=_rms_norm_params,
        macs=_numel,
        lower=_rms_norm_lower,
        doc="RMS normalization over the last dim: x / sqrt(mean(x^2, -1) + eps) * weight "
        "(torch.nn.RMSNorm; Llama's RMSNorm); offset: 1 gives Gemma's (1 + weight) gain.",
    )
)


class BatchNormArgs(OpArgs):
    """Batch norm over dim 1 of (B, C), (B, C, L) or (B, C, H, W); ``num_features`` (C) is
    inferred. ``momentum: null`` keeps a cumulative average, as in torch."""

    eps: float = Field(default=1e-5, gt=0, description="added to the variance")
    momentum: float | None = Field(
        default=0.1, ge=0, le=1, description="running-stats update rate; null: cumulative"
    )
    affine: bool = Field(default=True, description="learned weight and bias")
    track_running_stats: bool = Field(
        default=True, description="keep running mean/var buffers (used in eval mode)"
    )
    num_features: int | None = Field(
        default=None, gt=0, description="inferred: the size of dim 1 (channels)"
    )


class InstanceNormArgs(BatchNormArgs):
    """Instance norm over each (sample, channel)'s spatial dims, of (B, C, L), (B, C, H, W) or
    (B, C, D, H, W); ``num_features`` (C) is inferred. torch's defaults: no affine, no running
    stats."""

    affine: bool = Field(default=False, description="learned per-channel weight and bias")
    track_running_stats: bool = Field(
        default=False, description="keep running mean/var buffers (used in eval mode)"
    )


# batch_norm and instance_norm: per-channel statistics, torch's module class by input rank.
_CHANNEL_NORMS: dict[str, dict[int, str]] = {
    "batch_norm": {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d"},
    "instance_norm": {3: "InstanceNorm1d", 4: "InstanceNorm2d", 5: "InstanceNorm3d"},
}


def _channel_norm_shape(op: str) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        x = ctx.x
        need_float(x, what=op)
        ctx.need_rank(x, tuple(_CHANNEL_NORMS[op]), "x", f"{op} (B, C, ...)")
        ctx.infer("num_features", ctx.concrete(x.shape[1], "the channel dim (dim 1)", "x"))
        return x

    return rule


def _channel_norm_params(a: BatchNormArgs) -> dict[str, Shape]:
    c = a.num_features or 0
    return {"weight": (c,), "bias": (c,)} if a.affine else {}


def _channel_norm_buffers(a: BatchNormArgs) -> dict[str, Shape]:
    c = a.num_features or 0
    if not a.track_running_stats:
        return {}
    return {"running_mean": (c,), "running_var": (c,), "num_batches_tracked": ()}


def _channel_norm_lower(op: str) -> Lowering:
    def lower(c: LowerCtx) -> Any:
        from torch import nn

        a = c.args
        cls = getattr(nn, _CHANNEL_NORMS[op][c.in_types["x"].rank])
        norm = cls(
            a.num_features,
            eps=a.eps,
            momentum=a.momentum,
            affine=a.affine,
            track_running_stats=a.track_running_stats,
            **c.factory,
        )
        return c.module(norm)(c.x)

    return lower


for _name, _args, _label, _doc in (
    (
        "batch_norm",
        BatchNormArgs,
        "Batch Norm",
        "Batch normalization over the channel dim (BatchNorm1d for rank 2/3, 2d for rank 4).",
    ),
    (
        "instance_norm",
        InstanceNormArgs,
        "Instance Norm",
        "Instance normalization per sample and channel (InstanceNorm1d/2d/3d by rank).",
    ),
):
    register(
        OpDef(
            _name,
            _args,
            _channel_norm_shape(_name),
            Style("norm", _label),
            params=_channel_norm_params,
            buffers=_channel_norm_buffers,
            macs=_numel,
            lower=_channel_norm_lower(_name),
            doc=_doc,
        )
    )


class GroupNormArgs(OpArgs):
    """Group norm over (B, C, ...): C channels in ``num_groups`` groups, each normalized over
    its channels and the spatial dims; ``num_channels`` (C) is inferred."""

    num_groups: int = Field(gt=0, description="groups; must divide the channels")
    eps: float = Field(default=1e-5, gt=0, description="added to the variance")
    affine: bool = Field(default=True, description="learned per-channel weight and bias")
    num_channels: int | None = Field(
        default=None, gt=0, description="inferred: the size of dim 1 (channels)"
    )


def _group_norm_shape(ctx: ShapeCtx) -> TensorType:
    x, a = ctx.x, ctx.args
    need_float(x, what="group_norm")
    if x.rank < 2:
        raise ShapeError(f"group_norm expects (B, C, ...), found {fmt_shape(x.shape)}", port="x")
    c = ctx.infer("num_channels", ctx.concrete(x.shape[1], "the channel dim (dim 1)", "x"))
    if c % a.num_groups:
        raise ShapeError(
            f"num_groups={a.num_groups} does not divide the {c} channels",
            arg="num_groups",
            hint="pick a divisor of the channel count (32 groups suit 64, 128, 256 ...)",
        )
    return x


def _group_norm_params(a: GroupNormArgs) -> dict[str, Shape]:
    c = a.num_channels or 0
    return {"weight": (c,), "bias": (c,)} if a.affine else {}


def _group_norm_lower(c: LowerCtx) -> Any:
    from torch import nn

    a = c.args
    norm = nn.GroupNorm(a.num_groups, a.num_channels, eps=a.eps, affine=a.affine, **c.factory)
    return c.module(norm)(c.x)


register(
    OpDef(
        "group_norm",
        GroupNormArgs,
        _group_norm_shape,
        Style("norm", "Group Norm"),
        params=_group_norm_params,
        macs=_numel,
        lower=_group_norm_lower,
        doc="Group normalization over channel groups and spatial dims (nn.GroupNorm).",
    )
)


class DropoutArgs(OpArgs):
    """Zero each element with probability ``p`` while training (scaling the rest by 1/(1-p))."""

    p: float = Field(default=0.5, ge=0, lt=1, description="probability of zeroing, in [0, 1)")


def _dropout_shape(ctx: ShapeCtx) -> TensorType:
    need_float(ctx.x, what="dropout")
    return ctx.x


def _dropout_lower(c: LowerCtx) -> Any:
    from torch import nn

    # A module, not F.dropout: the module follows the model's train/eval mode.
    return c.module(nn.Dropout(c.args.p))(c.x)


register(
    OpDef(
        "dropout",
        DropoutArgs,
        _dropout_shape,
        Style("dropout", "Dropout"),
        lower=_dropout_lower,
        doc="Dropout (identity in eval mode).",
    )
)
