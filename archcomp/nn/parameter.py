"""A free learned tensor: class tokens, learned queries, layer-scale gains."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class LearnedTensor(nn.Module):
    """Returns its ``weight`` (a Parameter of the declared ``shape``); takes no input.

    Initialised N(0, 1) like ``nn.Embedding``, unless the spec names an initializer
    (``init: zeros`` for a class token, ``init: {constant: {value: 1e-6}}`` for layer-scale).
    """

    def __init__(self, shape: tuple[int, ...], device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.weight = nn.Parameter(torch.empty(self.shape, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:  # no values to draw (and torch's meta normal_ is slow)
            nn.init.normal_(self.weight)

    def forward(self) -> Tensor:
        return self.weight  # (*shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
