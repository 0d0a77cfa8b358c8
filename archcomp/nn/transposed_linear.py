"""A linear layer whose weight is stored (in_features, out_features): GPT-2's ``Conv1D``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


class TransposedLinear(nn.Module):
    """``y = x W + b`` with ``weight`` (in_features, out_features), as transformers' ``Conv1D``
    (GPT-2) stores it, so such a checkpoint's tensors load by their own keys unchanged."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation, on the transposed table."""
        if self.weight.is_meta:
            return
        nn.init.kaiming_uniform_(self.weight.T, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight.T, self.bias)  # (..., out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
