"""RMS norm with an offset gain (Gemma): ``(offset + weight) * x / sqrt(mean(x^2) + eps)``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class OffsetRMSNorm(nn.Module):
    """RMS norm over the last dim whose gain is ``offset + weight`` (Gemma: offset 1, so a zero
    weight is the identity gain), computed in float32 and cast back to the input's dtype after
    the gain, as transformers' ``GemmaRMSNorm`` does (Llama's casts before it).

    ``weight`` (normalized_shape,) is initialised to ``1 - offset``: a gain of one.
    """

    def __init__(
        self,
        normalized_shape: int,
        eps: float = 1e-6,
        offset: float = 1.0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.offset = offset
        self.weight = nn.Parameter(torch.empty(normalized_shape, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:  # no values to fill
            nn.init.constant_(self.weight, 1.0 - self.offset)

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()  # (..., d) in float32
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., d)
        return (h * (self.offset + self.weight.float())).type_as(x)  # (..., d) * (d,)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, offset={self.offset}"
