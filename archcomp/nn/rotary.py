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


class RopeConfig(NamedTuple):
    """The rotary options of :class:`~archcomp.nn.attention.MultiHeadAttention`."""

    theta: float = 10000.0
    rotary_dim: int | None = None  # None: the whole head
    interleaved: bool = False
    max_len: int = 4096
    scaling: Llama3Scaling | None = None


def inverse_frequencies(
    rotary_dim: int, theta: float, scaling: Llama3Scaling | None = None, device: Any = None
) -> Tensor:
    """``theta^(-2i/r)`` for i = 0 .. r/2 - 1, float32, optionally Llama-3 scaled: wavelengths
    longer than ``original_max_len / low_freq_factor`` are divided by ``factor``, those shorter
    than ``original_max_len / high_freq_factor`` kept, and the band between interpolated."""
    two_i = torch.arange(0, rotary_dim, 2, device=device, dtype=torch.int64).float()  # (r/2,)
    inv_freq = 1.0 / (theta ** (two_i / rotary_dim))  # (r/2,)
    if scaling is None:
        return inv_freq
    factor, low, high, old_len = scaling
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


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
    ``torch.export``.
    """

    cos: Tensor
    sin: Tensor

    def __init__(
        self,
        head_dim: int,
        theta: float = 10000.0,
        rotary_dim: int | None = None,
        interleaved: bool = False,
        max_len: int = 4096,
        scaling: Llama3Scaling | None = None,
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
        self.scaling = scaling
        self._r = r
        cos, sin = self._tables(device, dtype)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, device: Any, dtype: Any) -> tuple[Tensor, Tensor]:
        inv_freq = inverse_frequencies(self._r, self.theta, self.scaling, device)  # (r/2,)
        t = torch.arange(self.max_len, device=device, dtype=torch.int64).float()  # (max_len,)
        angle = torch.outer(t, inv_freq)  # (max_len, r/2), float32
        cos, sin = angle.cos(), angle.sin()
        return (cos.to(dtype), sin.to(dtype)) if dtype is not None else (cos, sin)

    def reset_parameters(self) -> None:
        """Recompute the tables in place (after ``to_empty`` from the meta device)."""
        cos, sin = self._tables(self.cos.device, None)
        with torch.no_grad():
            self.cos.copy_(cos)
            self.sin.copy_(sin)

    def forward(self, x: Tensor) -> Tensor:
        n = x.size(-2)  # T
        check_length(
            n, self.max_len, f"sequence length exceeds the rotary tables' max_len {self.max_len}"
        )
        cos, sin = self.cos[:n], self.sin[:n]  # (T, r/2)
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
