"""Relative position biases: learned tables read at each (query, key) pair's relative
position, as an additive score bias [1, h, T, S] for the attention's ``score_bias`` input (T5's
bucketed distances, Swin's offsets within a window). The tables are the op's parameters."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Shape, fmt_shape
from archcomp.ops.common import need_float
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

# -- t5_relative_position_bias -------------------------------------------------------------------


class T5RelativeArgs(OpArgs):
    """T5's bias: the relative position ``key j - query i`` falls in one of ``num_buckets``
    buckets (exact for the nearest distances, logarithmic up to ``max_distance``); a learned
    table ``relative_attention_bias.weight`` [num_buckets, h] gives each bucket's bias per
    head. ``bidirectional`` (the encoder) gives later and earlier keys their own buckets; a
    causal decoder uses false. Query and key are read for their lengths only."""

    num_heads: int = Field(gt=0, description="heads h of the attention it feeds")
    num_buckets: int = Field(default=32, ge=4, description="rows of the table")
    max_distance: int = Field(default=128, gt=0, description="distance of the last bucket")
    bidirectional: bool = Field(default=True, description="encoder: true; causal decoder: false")


def _t5_shape(ctx: ShapeCtx) -> TensorType:
    a: T5RelativeArgs = ctx.args
    q, k = ctx.get("query"), ctx.get("key")
    assert q is not None and k is not None
    for port, t in (("query", q), ("key", k)):
        need_float(t, port, "t5_relative_position_bias")
        if t.rank < 2:
            raise ShapeError(f"{port} must be [B, L, ...], found {fmt_shape(t.shape)}", port=port)
    exact = (a.num_buckets // 2 if a.bidirectional else a.num_buckets) // 2
    if a.max_distance <= exact:
        raise ShapeError(
            f"max_distance {a.max_distance} must exceed the {exact} exact buckets",
            arg="max_distance",
            hint="T5 uses num_buckets 32, max_distance 128",
        )
    return TensorType((1, a.num_heads, q.shape[1], k.shape[1]), q.dtype)


def _t5_lower(c: LowerCtx) -> Any:
    from archcomp.nn.positional import T5RelativePositionBias

    a: T5RelativeArgs = c.args
    m = T5RelativePositionBias(
        a.num_heads, a.num_buckets, a.max_distance, a.bidirectional, **c.factory
    )
    return c.module(m)(c.inputs["query"], c.inputs["key"])  # (1, h, T, S)


T5_RELATIVE_POSITION_BIAS = register(
    OpDef(
        "t5_relative_position_bias",
        T5RelativeArgs,
        _t5_shape,
        Style("embedding", "Relative Position Bias"),
        inputs=(Port("query"), Port("key", default="query")),
        params=lambda a: {"relative_attention_bias.weight": (a.num_buckets, a.num_heads)},
        lower=_t5_lower,
        doc="T5's learned relative position bias [1, h, T, S] (bucketed distances, "
        "bidirectional or causal) for an attention's score_bias; its table "
        "relative_attention_bias.weight [num_buckets, h] is the op's parameter.",
    )
)


# -- swin_relative_position_bias -----------------------------------------------------------------


class SwinRelativeArgs(OpArgs):
    """Swin's bias within a window of Wh x Wh (or [Wh, Ww]) positions, N = Wh * Ww: a learned
    table ``relative_position_bias_table`` [(2 Wh - 1)(2 Ww - 1), h] read at each pair's offset
    (dy, dx) through the index buffer ``relative_position_index`` [N, N] (non-persistent).
    Takes no input: the result [1, h, N, N] broadcasts over the windows of a batch."""

    window_size: int | list[int] = Field(description="Wh (square window) or [Wh, Ww]")
    num_heads: int = Field(gt=0, description="heads h of the attention it feeds")


def _swin_window(a: SwinRelativeArgs) -> tuple[int, int]:
    w = a.window_size
    return (w, w) if isinstance(w, int) else (w[0], w[1])


def _swin_shape(ctx: ShapeCtx) -> TensorType:
    a: SwinRelativeArgs = ctx.args
    w = a.window_size
    if isinstance(w, int):
        w = [w]
    if len(w) not in (1, 2) or any(s <= 0 for s in w):
        raise ShapeError(
            f"window_size must be a positive int or [Wh, Ww], found {a.window_size}",
            arg="window_size",
        )
    wh, ww = _swin_window(a)
    n = wh * ww
    return TensorType((1, a.num_heads, n, n), "float32")


def _swin_params(a: SwinRelativeArgs) -> dict[str, Shape]:
    wh, ww = _swin_window(a)
    return {"relative_position_bias_table": ((2 * wh - 1) * (2 * ww - 1), a.num_heads)}


def _swin_buffers(a: SwinRelativeArgs) -> dict[str, Shape]:
    wh, ww = _swin_window(a)
    return {"relative_position_index": (wh * ww, wh * ww)}  # non-persistent


def _swin_lower(c: LowerCtx) -> Any:
    from archcomp.nn.positional import SwinRelativePositionBias

    a: SwinRelativeArgs = c.args
    return c.module(SwinRelativePositionBias(_swin_window(a), a.num_heads, **c.factory))()


SWIN_RELATIVE_POSITION_BIAS = register(
    OpDef(
        "swin_relative_position_bias",
        SwinRelativeArgs,
        _swin_shape,
        Style("embedding", "Relative Position Bias"),
        inputs=(),
        params=_swin_params,
        buffers=_swin_buffers,
        lower=_swin_lower,
        doc="Swin's learned relative position bias [1, h, N, N] within a window of N = Wh * Ww "
        "positions, for an attention's score_bias; its table relative_position_bias_table "
        "[(2Wh-1)(2Ww-1), h] is the op's parameter, its index a non-persistent buffer.",
    )
)
