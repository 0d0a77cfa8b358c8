"""Positional encodings added to a [..., S, d] input: sinusoidal (fixed) and learned."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from archcomp.nn.cache_state import CacheState

CHUNK = 1 << 20  # table entries computed at a time: what the table costs beyond itself


def check_length(n: int, max_len: int, message: str) -> None:
    """Raise ``message`` when a sequence of ``n`` exceeds a table of ``max_len`` rows: eagerly,
    under dynamo and under export. ``message`` is a constant (dynamo cannot trace a closure
    over a symbolic length); under ``torch.jit.trace`` sizes are tensors and the trace records
    this input's length, so there is nothing to check."""
    if not torch.jit.is_tracing():
        torch._check(n <= max_len, lambda: message)


def sinusoid_table(
    max_len: int,
    d_model: int,
    device: Any = None,
    dtype: Any = None,
    layout: str = "interleaved",
) -> Tensor:
    """The fixed sinusoids, in one of two layouts:

    - ``interleaved`` (the Transformer paper): PE(pos, 2i) = sin(pos / 10000^(2i/d)),
      PE(pos, 2i+1) = cos(pos / 10000^(2i/d)); an odd ``d_model`` gets one more sine column;
    - ``concat`` (tensor2tensor, Whisper's ``sinusoids``): PE(pos, i) = sin(pos * w_i) and
      PE(pos, d/2 + i) = cos(pos * w_i), w_i = exp(-i * log(10000) / (d/2 - 1)), d even.

    Computed in float32 (on ``device``; nothing is allocated on meta), written into a table of
    ``dtype``, :data:`CHUNK` entries at a time: building it needs the table and a few
    chunk-sized temporaries, not several tables' worth.
    """
    pe = torch.empty(max_len, d_model, device=device, dtype=dtype or torch.float32)  # (max_len, d)
    if pe.is_meta or pe.numel() == 0:
        return pe
    half = d_model // 2
    if layout == "concat":  # Whisper's formula, op for op
        inv = torch.exp(-(math.log(10000.0) / (half - 1)) * torch.arange(half, device=device))
    else:
        two_i = torch.arange(0, d_model, 2, device=device, dtype=torch.float32)  # (ceil(d/2),)
        inv = torch.exp(two_i * (-math.log(10000.0) / d_model))  # (ceil(d/2),)
    rows = max(1, CHUNK // d_model)
    for start in range(0, max_len, rows):
        stop = min(start + rows, max_len)
        pos = torch.arange(start, stop, device=device).view(-1, 1)  # (n, 1), int64
        angle = pos * inv.view(1, -1)  # (n, ceil(d/2)), float32
        if layout == "concat":
            pe[start:stop, :half] = torch.sin(angle)
            pe[start:stop, half:] = torch.cos(angle)
        else:
            pe[start:stop, 0::2] = torch.sin(angle)
            pe[start:stop, 1::2] = torch.cos(angle[:, :half])
    return pe


class SinusoidalPositionalEncoding(nn.Module):
    """``x + PE[:S]`` with fixed sinusoids (``layout``: see :func:`sinusoid_table`).

    The table is a non-persistent buffer ``pe`` (max_len, d_model): it moves with ``.to()``
    but stays out of the state dict, since it is recomputed at construction.
    """

    pe: Tensor

    def __init__(
        self,
        d_model: int,
        max_len: int = 5000,
        layout: str = "interleaved",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.layout = layout
        pe = sinusoid_table(max_len, d_model, device, dtype, layout)
        self.register_buffer("pe", pe, persistent=False)
        self.cache_state: CacheState | None = None  # set while a KVCache is bound

    def forward(self, x: Tensor) -> Tensor:
        if self.cache_state is not None:  # decoding: the new tokens' positions
            return x + self.pe[self.cache_state.positions]  # (B, T, d) + (T or B, T, d)
        n = x.size(-2)  # S
        check_length(n, self.max_len, f"sequence length exceeds max_len {self.max_len}")
        return x + self.pe[:n]  # (..., S, d) + (S, d)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, layout={self.layout}"


class LearnedPositionalEncoding(nn.Module):
    """``x + weight[offset:offset + S]`` with a learned table ``weight`` (offset + max_len,
    d_model).

    The table is what GPT-2 calls ``wpe`` and BERT ``position_embeddings``: an embedding looked
    up at positions 0..S-1; BART's ``embed_positions`` has ``offset`` 2 (rows 0 and 1 are
    never looked up). Initialised N(0, 1) like ``nn.Embedding``.
    """

    def __init__(
        self,
        d_model: int,
        max_len: int,
        offset: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.offset = offset
        rows = max_len + offset
        self.weight = nn.Parameter(torch.empty(rows, d_model, device=device, dtype=dtype))
        self.cache_state: CacheState | None = None  # set while a KVCache is bound
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:  # no values to draw (and torch's meta normal_ is slow)
            nn.init.normal_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        if self.cache_state is not None:  # decoding: the new tokens' positions
            return x + self.weight[self.offset + self.cache_state.positions]
        n = x.size(-2)  # S
        check_length(n, self.max_len, f"sequence length exceeds max_len {self.max_len}")
        return x + self.weight[self.offset : self.offset + n]  # (..., S, d) + (S, d)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, offset={self.offset}"


def t5_buckets(
    relative_position: Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """T5's bucket of each relative position ``key - query`` (Raffel et al., 2020): exact
    buckets for the ``num_buckets / 2`` nearest distances, then logarithmically wider ones up
    to ``max_distance``; bidirectional halves the buckets between the two directions, causal
    (unidirectional) maps every later key to bucket 0. As transformers'
    ``T5Attention._relative_position_bucket``."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = -relative_position.clamp(max=0)  # keys before the query: distance >= 0
    exact = num_buckets // 2
    scaled = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = (exact + (scaled * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, large)


class T5RelativePositionBias(nn.Module):
    """T5's learned relative position bias: ``relative_attention_bias`` [num_buckets, h] read
    at the bucket of each (query i, key j), as (1, h, T, S) for the attention's ``score_bias``.

    Inputs: query (B, T, ...) and key (B, S, ...), read for their lengths only.
    """

    def __init__(
        self,
        num_heads: int,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.relative_attention_bias = nn.Embedding(
            num_buckets, num_heads, device=device, dtype=dtype
        )
        self.cache_state: CacheState | None = None  # set while a KVCache is bound

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        state = self.cache_state
        if state is not None:  # decoding: the new tokens' slots against the keys the cache gives
            keys = state.max_length if state.static else state.length + query.size(1)
            i, j = state.write[:, None], state.slots[None, :keys]  # (T, 1), (1, S)
        else:
            i = torch.arange(query.size(1), device=query.device)[:, None]  # (T, 1)
            j = torch.arange(key.size(1), device=query.device)[None, :]  # (1, S)
        buckets = t5_buckets(j - i, self.bidirectional, self.num_buckets, self.max_distance)
        bias = self.relative_attention_bias(buckets)  # (T, S, h)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, h, T, S)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, num_buckets={self.num_buckets}, "
            f"max_distance={self.max_distance}, bidirectional={self.bidirectional}"
        )


def swin_index(window: tuple[int, int], device: Any = None) -> Tensor:
    """(N, N) row of ``relative_position_bias_table`` for each pair of positions of a
    (Wh, Ww) window, N = Wh * Ww: the offset (dy, dx) shifted to be non-negative, row-major."""
    wh, ww = window
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij"
        )
    ).flatten(1)  # (2, N): (y, x) of each position
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N): offsets
    return (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)  # (N, N)


class SwinRelativePositionBias(nn.Module):
    """Swin's learned relative position bias (Liu et al., 2021): a table
    ``relative_position_bias_table`` [(2 Wh - 1)(2 Ww - 1), h] read at the offset of each pair
    of positions of a window, as (1, h, N, N) for the attention's ``score_bias``. The index is
    a non-persistent buffer ``relative_position_index`` (N, N)."""

    relative_position_index: Tensor

    def __init__(
        self,
        window_size: tuple[int, int],
        num_heads: int,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        wh, ww = window_size
        rows = (2 * wh - 1) * (2 * ww - 1)
        self.relative_position_bias_table = nn.Parameter(
            torch.empty(rows, num_heads, device=device, dtype=dtype)
        )
        index = swin_index(window_size, device)  # on meta: shape only
        self.register_buffer("relative_position_index", index, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.relative_position_bias_table.is_meta:
            return
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        with torch.no_grad():  # after to_empty from the meta device
            self.relative_position_index.copy_(swin_index(self.window_size, None))

    def forward(self) -> Tensor:
        n = self.relative_position_index.size(0)  # N = Wh * Ww
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]
        return bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # (1, h, N, N)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, num_heads={self.num_heads}"


def swin_regions(size: int, window: int, shift: int, device: Any = None) -> Tensor:
    """(size,) region of each row (or column) of a map rolled by -shift: 0 before the last
    window, 1 in the last window before the shift, 2 in the strip the roll brought in."""
    pos = torch.arange(size, device=device)
    return (pos >= size - window).long() + (pos >= size - shift).long()


def swin_shift_mask(
    height: int, width: int, window: int, shift: int, value: float, device: Any = None
) -> Tensor:
    """(nW, N, N) additive mask of the shifted windows (Liu et al., 2021), N = window^2, nW the
    windows of a height x width map in row-major order: ``value`` between two positions of a
    window from different regions of the rolled map, 0 within one (transformers' get_attn_mask;
    all 0 when shift is 0)."""
    rows = swin_regions(height, window, shift, device)  # (H,)
    cols = swin_regions(width, window, shift, device)  # (W,)
    region = rows[:, None] * 3 + cols[None, :]  # (H, W): 0..8
    tiles = region.view(height // window, window, width // window, window)
    windows = tiles.permute(0, 2, 1, 3).reshape(-1, window * window)  # (nW, N)
    across = windows[:, None, :] != windows[:, :, None]  # (nW, N, N)
    return torch.zeros(across.shape, device=device).masked_fill(across, value)


class SwinShiftMask(nn.Module):
    """The additive attention mask of Swin's shifted windows for a (B, H, W, C) map, as
    (B nW, 1, N, N) for the attention's ``mask`` input: the windows of each image in row-major
    order, as a window partition lists them. The (nW, N, N) mask is a non-persistent buffer
    ``mask`` (float32), built from the sizes; forward casts it to the input's dtype."""

    mask: Tensor

    def __init__(
        self,
        height: int,
        width: int,
        window_size: int,
        shift: int,
        value: float = -100.0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.height = height
        self.width = width
        self.window_size = window_size
        self.shift = shift
        self.value = value
        n = window_size * window_size
        windows = (height // window_size) * (width // window_size)
        self.register_buffer("mask", torch.empty(windows, n, n, device=device), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.mask.is_meta:
            return
        with torch.no_grad():  # also after to_empty from the meta device
            mask = swin_shift_mask(
                self.height, self.width, self.window_size, self.shift, self.value, self.mask.device
            )
            self.mask.copy_(mask)

    def forward(self, x: Tensor) -> Tensor:
        n = self.mask.size(-1)  # N
        mask = self.mask.to(x.dtype)[None, :, None]  # (1, nW, 1, N, N)
        return mask.expand(x.size(0), -1, -1, -1, -1).reshape(-1, 1, n, n)  # (B nW, 1, N, N)

    def extra_repr(self) -> str:
        return (
            f"height={self.height}, width={self.width}, window_size={self.window_size}, "
            f"shift={self.shift}, value={self.value}"
        )
