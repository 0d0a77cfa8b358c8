"""Relative position biases: learned tables read at each (query, key) pair's relative
position, as an additive score bias [1, h, T, S] for the attention's ``score_bias`` input (T5's
bucketed distances, Swin's offsets within a window). The tables are the op's parameters.
Also Swin's shift mask, the additive mask its shifted windows attend with (``mask`` input)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Shape, fmt_shape, mul
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
        Style("embedding", "Relative Position Bias", absorbed=True),
        inputs=(),
        params=_swin_params,
        buffers=_swin_buffers,
        lower=_swin_lower,
        doc="Swin's learned relative position bias [1, h, N, N] within a window of N = Wh * Ww "
        "positions, for an attention's score_bias; its table relative_position_bias_table "
        "[(2Wh-1)(2Ww-1), h] is the op's parameter, its index a non-persistent buffer.",
    )
)


# -- swin_shift_mask -----------------------------------------------------------------------------


class SwinShiftMaskArgs(OpArgs):
    """The mask of Swin's shifted windows (SW-MSA) for a [B, H, W, C] map whose windows of
    window_size x window_size are attended apart after rolling the map by -shift rows and
    columns: ``value`` between two positions of a window that come from different regions of
    the map (the strips the roll brought together), 0 within one; transformers'
    get_attn_mask, repeated for each image. The result [B nW, 1, N, N] (N = window_size^2,
    nW = H W / N, the windows in row-major order) feeds the attention's mask input. The map is
    read for its sizes and dtype only. ``shift: 0`` (W-MSA, every window in one region) gives
    an all-zero mask, so the layers of a stage can alternate the shift with one block."""

    window_size: int = Field(gt=0, description="the window's side (H and W are multiples)")
    shift: int = Field(ge=0, description="rows and columns the map is rolled by, below window_size")
    value: float = Field(default=-100.0, description="the score added across regions")
    height: int | None = Field(default=None, gt=0, description="inferred: the map's H")
    width: int | None = Field(default=None, gt=0, description="inferred: the map's W")


def _shift_mask_sizes(a: SwinShiftMaskArgs) -> tuple[int, int]:
    """(nW, N): the windows of the map and the positions of a window."""
    windows = ((a.height or 0) // a.window_size) * ((a.width or 0) // a.window_size)
    return windows, a.window_size * a.window_size


def _shift_mask_shape(ctx: ShapeCtx) -> TensorType:
    a: SwinShiftMaskArgs = ctx.args
    x = ctx.x
    need_float(x, "x", "swin_shift_mask")
    if x.rank != 4:
        raise ShapeError(f"x must be a map [B, H, W, C], found {fmt_shape(x.shape)}", port="x")
    if a.shift >= a.window_size:
        raise ShapeError(
            f"shift {a.shift} must be below window_size {a.window_size}",
            arg="shift",
            hint="Swin shifts by window_size // 2",
        )
    windows = 1
    for axis, what, arg in ((1, "H", "height"), (2, "W", "width")):
        d = ctx.concrete(x.shape[axis], f"the map's {what}", "x")
        if d % a.window_size:
            raise ShapeError(
                f"the map's {what} ({d}) is not a multiple of window_size {a.window_size}",
                port="x",
                hint="pad the map to whole windows",
            )
        windows *= ctx.infer(arg, d) // a.window_size
    n = a.window_size * a.window_size
    return TensorType((mul(x.shape[0], windows), 1, n, n), x.dtype)


def _shift_mask_buffers(a: SwinShiftMaskArgs) -> dict[str, Shape]:
    windows, n = _shift_mask_sizes(a)
    return {"mask": (windows, n, n)}  # non-persistent


def _shift_mask_lower(c: LowerCtx) -> Any:
    from archcomp.nn.positional import SwinShiftMask

    a: SwinShiftMaskArgs = c.args
    assert a.height is not None and a.width is not None
    m = SwinShiftMask(a.height, a.width, a.window_size, a.shift, a.value, **c.factory)
    return c.module(m)(c.x)  # (B nW, 1, N, N)


SWIN_SHIFT_MASK = register(
    OpDef(
        "swin_shift_mask",
        SwinShiftMaskArgs,
        _shift_mask_shape,
        Style("shape", "Shift Mask", absorbed=True),
        buffers=_shift_mask_buffers,
        lower=_shift_mask_lower,
        doc="Swin's shifted-window attention mask [B nW, 1, N, N] for a [B, H, W, C] map: "
        "value (-100) between positions of a window from different regions of the rolled "
        "map, 0 within one; its (nW, N, N) table is a non-persistent buffer.",
    )
)
