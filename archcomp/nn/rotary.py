"""Rotary position embedding (RoPE; Su et al., 2021), as Llama, Mistral, GPT-NeoX and GPT-J use it.

Position t rotates each pair of a head's dims (x_a, x_b) by the angle ``t * theta^(-2i/r)``
(``r`` = rotary_dim, ``i`` = the pair's index):
``(x_a, x_b) -> (x_a cos - x_b sin, x_b cos + x_a sin)``. Two pairings are in use:

- rotate-half (``interleaved=False``; transformers' Llama, GPT-NeoX): dim i pairs with dim
  i + r/2, the layout of Hugging Face checkpoints;
- interleaved (``interleaved=True``; GPT-J, Meta's original Llama code): dim 2i pairs with 2i+1.

Dims past ``rotary_dim`` pass through unchanged (partial rotation, as GPT-NeoX and GPT-J).
The cos/sin tables are computed in float32 at construction, cast to the module's dtype (as
transformers casts them to the input's), and kept as non-persistent buffers: they move with
``.to()`` and stay out of the state dict.

Scaling for long contexts follows transformers' ``ROPE_INIT_FUNCTIONS``: ``llama3``,
``linear``, ``dynamic`` (NTK), ``yarn`` and ``longrope``; YaRN and LongRoPE also scale cos and
sin by an attention factor.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from archcomp.nn.positional import check_length


class Llama3Scaling(NamedTuple):
    """Llama 3.1's frequency scaling for long contexts (transformers' rope_type "llama3")."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_len: int = 8192
    type: str = "llama3"


class LinearScaling(NamedTuple):
    """Position interpolation: every frequency divided by ``factor`` (rope_type "linear")."""

    factor: float
    type: str = "linear"


class DynamicScaling(NamedTuple):
    """Dynamic NTK (rope_type "dynamic"): for a sequence of T > ``original_max_len`` positions
    the base becomes ``theta * (factor * T / original_max_len - (factor - 1))^(r / (r - 2))``,
    recomputed for each such T; shorter ones use the plain frequencies."""

    factor: float
    original_max_len: int
    type: str = "dynamic"


class YarnScaling(NamedTuple):
    """YaRN (rope_type "yarn"): frequencies blended between ``theta^(-2i/r)`` (fast dims) and
    that over ``factor`` (slow dims) by a linear ramp over the dims whose rotations at
    ``original_max_len`` lie between ``beta_slow`` and ``beta_fast``; cos and sin are
    multiplied by ``attention_factor`` (default ``0.1 ln(factor) + 1``, or DeepSeek's ratio
    of two such with ``mscale`` and ``mscale_all_dim``)."""

    factor: float
    original_max_len: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True
    type: str = "yarn"


class LongRopeScaling(NamedTuple):
    """LongRoPE (rope_type "longrope"; Phi-3): frequencies divided per dim by ``short_factor``,
    or by ``long_factor`` for a sequence longer than ``original_max_len``; cos and sin are
    multiplied by ``attention_factor`` (default ``sqrt(1 + ln(factor) / ln(original_max_len))``)."""

    short_factor: tuple[float, ...]
    long_factor: tuple[float, ...]
    original_max_len: int
    factor: float = 1.0
    attention_factor: float | None = None
    type: str = "longrope"


Scaling = Llama3Scaling | LinearScaling | DynamicScaling | YarnScaling | LongRopeScaling
SCALINGS: dict[str, Any] = {
    c._field_defaults["type"]: c
    for c in (Llama3Scaling, LinearScaling, DynamicScaling, YarnScaling, LongRopeScaling)
}


def as_scaling(s: Any) -> Scaling | None:
    """``s`` as its NamedTuple; a plain tuple (as ``--emit-python`` writes one) is read by its
    last entry, the type, and a tuple of four numbers is Llama 3's."""
    if s is None or type(s) in SCALINGS.values():
        return s  # type: ignore[no-any-return]
    if isinstance(s[-1], str):
        return SCALINGS[s[-1]](*s)  # type: ignore[no-any-return]
    return Llama3Scaling(*s)


class RopeConfig(NamedTuple):
    """The rotary options of :class:`~archcomp.nn.attention.MultiHeadAttention`."""

    theta: float = 10000.0
    rotary_dim: int | None = None  # None: the whole head
    interleaved: bool = False
    max_len: int = 4096
    scaling: Scaling | None = None


def _plain(rotary_dim: int, theta: float, device: Any) -> Tensor:
    two_i = torch.arange(0, rotary_dim, 2, device=device, dtype=torch.int64).float()  # (r/2,)
    return 1.0 / (theta ** (two_i / rotary_dim))  # (r/2,)


def _llama3(inv_freq: Tensor, scaling: Llama3Scaling) -> Tensor:
    factor, low, high, old_len, _ = scaling
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


def _yarn(rotary_dim: int, theta: float, s: YarnScaling, device: Any) -> Tensor:
    r = rotary_dim

    def dim_of(rotations: float) -> float:  # the dim that turns ``rotations`` times
        return r * math.log(s.original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_of(s.beta_fast), dim_of(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, r - 1)
    if low == high:
        high += 0.001  # no empty ramp
    pos_freqs = theta ** (torch.arange(0, r, 2, device=device).float() / r)  # (r/2,)
    ramp = (torch.arange(r // 2, dtype=torch.float32) - low) / (high - low)
    keep = (1 - torch.clamp(ramp, 0, 1)).to(device)  # 1: extrapolate (fast dims)
    return (1.0 / (s.factor * pos_freqs)) * (1 - keep) + (1.0 / pos_freqs) * keep


def inverse_frequencies(
    rotary_dim: int,
    theta: float,
    scaling: Scaling | None = None,
    device: Any = None,
    seq_len: int | None = None,
) -> Tensor:
    """``theta^(-2i/r)`` for i = 0 .. r/2 - 1, float32, scaled as transformers'
    ``ROPE_INIT_FUNCTIONS[scaling.type]`` scales them for a sequence of ``seq_len`` positions
    (``dynamic`` and ``longrope`` depend on it; None: at most the original length)."""
    s = scaling
    if s is None:
        return _plain(rotary_dim, theta, device)
    if isinstance(s, Llama3Scaling):
        return _llama3(_plain(rotary_dim, theta, device), s)
    if isinstance(s, LinearScaling):
        return _plain(rotary_dim, theta, device) / s.factor
    if isinstance(s, DynamicScaling):
        n = max(seq_len or 0, s.original_max_len)
        base = theta * ((s.factor * n / s.original_max_len) - (s.factor - 1)) ** (
            rotary_dim / (rotary_dim - 2)
        )
        return _plain(rotary_dim, base, device)
    if isinstance(s, YarnScaling):
        return _yarn(rotary_dim, theta, s, device)
    long = seq_len is not None and seq_len > s.original_max_len
    ext = torch.tensor(s.long_factor if long else s.short_factor, device=device)  # (r/2,)
    two_i = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=device).float()
    return 1.0 / (ext * theta ** (two_i / rotary_dim))


def attention_scaling(scaling: Scaling | None) -> float:
    """The factor on cos and sin (transformers' ``attention_scaling``): YaRN's and LongRoPE's
    magnitude correction, 1 for the others."""
    s = scaling
    if isinstance(s, YarnScaling):
        if s.attention_factor is not None:
            return s.attention_factor

        def mscale(scale: float, m: float = 1.0) -> float:
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        if s.mscale and s.mscale_all_dim:
            return mscale(s.factor, s.mscale) / mscale(s.factor, s.mscale_all_dim)
        return mscale(s.factor)
    if isinstance(s, LongRopeScaling):
        if s.attention_factor is not None:
            return s.attention_factor
        if s.factor <= 1.0:
            return 1.0
        return math.sqrt(1 + math.log(s.factor) / math.log(s.original_max_len))
    return 1.0


def rotate(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool) -> Tensor:
    """Every pair of x (..., T, r) rotated by the angles whose cos and sin are (T, r/2)."""
    if interleaved:
        pairs = x.unflatten(-1, (-1, 2))  # (..., T, r/2, 2): (x_2i, x_2i+1)
        a, b = pairs[..., 0], pairs[..., 1]  # (..., T, r/2) each
        return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    a, b = x.chunk(2, dim=-1)  # (..., T, r/2) each: x_i and x_(i + r/2)
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)  # (..., T, r)


class RotaryEmbedding(nn.Module):
    """RoPE on x (..., T, d) at positions 0 .. T-1 (T at most ``max_len``), d = ``head_dim``.

    Buffers ``cos`` and ``sin`` (max_len, rotary_dim / 2), non-persistent. The forward has no
    data-dependent Python branches: it traces under ``torch.compile(fullgraph=True)`` and
    ``torch.export``. With ``dynamic`` scaling a sequence longer than the scaling's
    ``original_max_len`` gets tables computed for its length T in the forward, as transformers
    computes them for a forward without a cache (a branch on T: compiled code guards on which
    side of ``original_max_len`` T lies); so does ``longrope``, whose long factors' frequencies
    are a buffer (``long_inv_freq``, rotary_dim / 2): ``positions`` of which one passes
    ``original_max_len`` (a KV cache's step) are rotated by them, as transformers'
    ``max(position_ids) + 1`` decides.
    """

    cos: Tensor
    sin: Tensor
    long_inv_freq: Tensor  # longrope only

    def __init__(
        self,
        head_dim: int,
        theta: float = 10000.0,
        rotary_dim: int | None = None,
        interleaved: bool = False,
        max_len: int = 4096,
        scaling: Scaling | tuple[Any, ...] | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        r = head_dim if rotary_dim is None else rotary_dim
        if r % 2 or not 0 < r <= head_dim:
            raise ValueError(f"rotary_dim {r} must be even and in 1..head_dim ({head_dim})")
        self.head_dim = head_dim
        self.theta = theta
        self.rotary_dim = rotary_dim
        self.interleaved = interleaved
        self.max_len = max_len
        self.scaling = as_scaling(scaling)
        self._r = r
        # dynamic and longrope: sequences longer than this get their own tables
        s = self.scaling
        self._switch = s.original_max_len if isinstance(s, DynamicScaling | LongRopeScaling) else 0
        self._long = isinstance(s, LongRopeScaling)  # the long factors' frequencies kept
        self._scale = attention_scaling(self.scaling)
        cos, sin = self._tables(max_len, None, device, dtype)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        if self._long:
            self.register_buffer("long_inv_freq", self._long_freqs(device), persistent=False)

    def _tables(
        self, n: int, seq_len: int | None, device: Any, dtype: Any
    ) -> tuple[Tensor, Tensor]:
        """cos and sin (n, r/2) at positions 0..n-1, for a sequence of ``seq_len``."""
        if torch.empty(0, device=device).device.type == "meta":  # shapes only: no arithmetic
            # (on meta each op runs its Python reference: seconds for a model's layers)
            empty = torch.empty(n, self._r // 2, device="meta", dtype=dtype or torch.float32)
            return empty, empty.clone()
        inv_freq = inverse_frequencies(self._r, self.theta, self.scaling, device, seq_len)
        t = torch.arange(n, device=device, dtype=torch.int64).float()  # (n,)
        angle = torch.outer(t, inv_freq)  # (n, r/2), float32
        cos, sin = angle.cos(), angle.sin()
        scale = attention_scaling(self.scaling)
        if scale != 1.0:
            cos, sin = cos * scale, sin * scale
        return (cos.to(dtype), sin.to(dtype)) if dtype is not None else (cos, sin)

    def _long_freqs(self, device: Any) -> Tensor:
        """LongRoPE's frequencies past the original length (r/2,), float32."""
        if torch.empty(0, device=device).device.type == "meta":  # shapes only (as _tables)
            return torch.empty(self._r // 2, device="meta")
        return inverse_frequencies(self._r, self.theta, self.scaling, device, self._switch + 1)

    def reset_parameters(self) -> None:
        """Recompute the tables in place (after ``to_empty`` from the meta device)."""
        cos, sin = self._tables(self.max_len, None, self.cos.device, None)
        with torch.no_grad():
            self.cos.copy_(cos)
            self.sin.copy_(sin)
            if self._long:
                self.long_inv_freq.copy_(self._long_freqs(self.cos.device))

    def forward(self, x: Tensor, positions: Tensor | slice | None = None) -> Tensor:
        """x (..., T, d) at positions 0..T-1, or at ``positions`` (T,) or (B, T) (x: (B, h, T, d)),
        or a ``slice`` of consecutive ones, as a KV cache gives them."""
        n = x.size(-2)  # T
        if positions is None:
            too_long = f"sequence length exceeds the rotary tables' max_len {self.max_len}"
            check_length(n, self.max_len, too_long)
            if self._switch and n > self._switch:  # dynamic, longrope: tables for this T
                return self.rotated(x, *self._tables(n, n, x.device, self.cos.dtype))
            positions = slice(0, n)
        return self.rotated(x, *self.tables_at(positions, n, x.device))

    def tables_at(self, positions: Tensor | slice, n: int, device: Any) -> tuple[Tensor, Tensor]:
        """cos and sin (T, r/2) or (B, 1, T, r/2) at ``positions`` (a slice: a view of the
        tables, no gather) for a sequence of ``n`` tokens; q and k of one forward share them."""
        if self._switch and not self._long and n > self._switch:  # dynamic: tables for this T
            return self._tables(n, n, device, self.cos.dtype)  # (T, r/2)
        if isinstance(positions, slice):
            if not (self._long and positions.stop > self._switch):
                return self.cos[positions], self.sin[positions]  # (T, r/2), a view
            positions = torch.arange(positions.start or 0, positions.stop, device=device)
        cos, sin = self.cos[positions], self.sin[positions]  # (T, r/2) or (B, T, r/2)
        if self._long:  # every position takes the long factors once one passes the switch
            past = positions.max() + 1 > self._switch  # (), as transformers' seq_len
            angle = positions.unsqueeze(-1).float() * self.long_inv_freq  # (..., T, r/2)
            long = angle.cos() * self._scale, angle.sin() * self._scale
            cos = torch.where(past, long[0].to(cos.dtype), cos)
            sin = torch.where(past, long[1].to(sin.dtype), sin)
        if positions.dim() == 2:
            cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)  # (B, 1, T, r/2)
        return cos, sin

    def rotated(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x (..., T, d) rotated by the angles of :meth:`tables_at`."""
        if self._r == self.head_dim:  # a constant of the module, not data
            return rotate(x, cos, sin, self.interleaved)  # (..., T, d)
        # partial rotation: the first r dims rotate, the rest pass through
        rot, rest = x[..., : self._r], x[..., self._r :]  # (..., T, r), (..., T, d - r)
        return torch.cat((rotate(rot, cos, sin, self.interleaved), rest), dim=-1)

    def extra_repr(self) -> str:
        layout = "interleaved" if self.interleaved else "rotate-half"
        return (
            f"head_dim={self.head_dim}, rotary_dim={self._r}, theta={self.theta}, "
            f"max_len={self.max_len}, {layout}, scaling={self.scaling}"
        )
