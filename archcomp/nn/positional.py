"""Positional encodings added to a [..., S, d] input: sinusoidal (fixed) and learned."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


def sinusoid_table(max_len: int, d_model: int, device: Any = None, dtype: Any = None) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

    Computed in float32 (on ``device``; nothing is allocated on meta), then cast to ``dtype``.
    An odd ``d_model`` gets one more sine column than cosine columns.
    """
    pos = torch.arange(max_len, device=device, dtype=torch.float32)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, device=device, dtype=torch.float32)  # (ceil(d/2),)
    angle = pos * torch.exp(two_i * (-math.log(10000.0) / d_model))  # (max_len, ceil(d/2))
    pe = torch.empty(max_len, d_model, device=device, dtype=torch.float32)  # (max_len, d)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe.to(dtype) if dtype is not None else pe


class SinusoidalPositionalEncoding(nn.Module):
    """``x + PE[:S]`` with the Transformer paper's fixed sinusoids.

    The table is a non-persistent buffer ``pe`` (max_len, d_model): it moves with ``.to()``
    but stays out of the state dict, since it is recomputed at construction.
    """

    pe: Tensor

    def __init__(
        self, d_model: int, max_len: int = 5000, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.register_buffer(
            "pe", sinusoid_table(max_len, d_model, device, dtype), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        n = x.size(-2)  # S
        # A constant message: dynamo cannot trace a closure over a symbolic length.
        message = f"sequence length exceeds max_len {self.max_len}"
        torch._check(n <= self.max_len, lambda: message)
        return x + self.pe[:n]  # (..., S, d) + (S, d)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"


class LearnedPositionalEncoding(nn.Module):
    """``x + weight[:S]`` with a learned table ``weight`` (max_len, d_model).

    The table is what GPT-2 calls ``wpe`` and BERT ``position_embeddings``: an embedding looked
    up at positions 0..S-1. Initialised N(0, 1) like ``nn.Embedding``.
    """

    def __init__(self, d_model: int, max_len: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, d_model, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:  # no values to draw (and torch's meta normal_ is slow)
            nn.init.normal_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        n = x.size(-2)  # S
        # A constant message: dynamo cannot trace a closure over a symbolic length.
        message = f"sequence length exceeds max_len {self.max_len}"
        torch._check(n <= self.max_len, lambda: message)
        return x + self.weight[:n]  # (..., S, d) + (S, d)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"
