"""Free tensors: learned (class tokens, learned queries, layer-scale gains; frozen ones) and
fixed buffers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class LearnedTensor(nn.Module):
    """Returns its ``weight`` (a Parameter of the declared ``shape``); takes no input.

    Initialised N(0, 1) like ``nn.Embedding``, unless the spec names an initializer
    (``init: zeros`` for a class token, ``init: {constant: {value: 1e-6}}`` for layer-scale).
    ``trainable=False`` freezes it (``requires_grad`` false); it stays in the state dict.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        trainable: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.trainable = trainable
        empty = torch.empty(self.shape, device=device, dtype=dtype)
        self.weight = nn.Parameter(empty, requires_grad=trainable)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:  # no values to draw (and torch's meta normal_ is slow)
            nn.init.normal_(self.weight)

    def forward(self) -> Tensor:
        return self.weight  # (*shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}" + ("" if self.trainable else ", trainable=False")


def learned_tensor(
    shape: tuple[int, ...], trainable: bool = True, device: Any = None, dtype: Any = None
) -> nn.Parameter:
    """A bare Parameter of ``shape``, N(0, 1) as :class:`LearnedTensor`'s weight: the tensor of
    a ``parameter`` node keyed by its node id (``key: self``), held by the node's parent."""
    weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype), trainable)
    if not weight.is_meta:  # no values to draw
        with torch.no_grad():
            nn.init.normal_(weight)
    return weight


def fixed_tensor(
    shape: tuple[int, ...], init_value: float = 0.0, device: Any = None, dtype: Any = None
) -> Tensor:
    """A bare tensor of ``shape``, every entry ``init_value``, as :class:`FixedTensor`'s
    buffer: the tensor of a ``buffer`` node keyed by its node id (``key: self``), held by the
    node's parent as a buffer."""
    value = torch.empty(shape, device=device, dtype=dtype)
    if not value.is_meta:  # no values to fill
        value.fill_(init_value)
    return value


class FixedTensor(nn.Module):
    """Returns its buffer ``value`` of the declared ``shape``, every entry ``init_value``;
    takes no input. ``persistent`` puts it in the state dict (saved and loaded with the
    weights); otherwise it is rebuilt at construction."""

    value: Tensor

    def __init__(
        self,
        shape: tuple[int, ...],
        init_value: float = 0.0,
        persistent: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.init_value = init_value
        self.persistent = persistent
        value = torch.empty(self.shape, device=device, dtype=dtype)
        self.register_buffer("value", value, persistent=persistent)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.value.is_meta:  # no values to fill
            with torch.no_grad():
                self.value.fill_(self.init_value)

    def forward(self) -> Tensor:
        return self.value  # (*shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, init_value={self.init_value}, persistent={self.persistent}"


class LayerScale(nn.Module):
    """``x * gamma``, a learned gain per channel along ``dim`` (CaiT's LayerScale; ConvNeXt's
    ``layer_scale_parameter`` channels-last, DINOv2's ``lambda1``).

    The gain has ``num_features`` entries, initialised to ``init_value`` (small: the residual
    branch starts near zero); it is the parameter ``gain_name`` (``gamma``; DINOv2's
    ``lambda1``).
    """

    def __init__(
        self,
        num_features: int,
        dim: int = -1,
        init_value: float = 1e-6,
        gain_name: str = "gamma",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.dim = dim
        self.init_value = init_value
        self.gain_name = gain_name
        gain = nn.Parameter(torch.empty(num_features, device=device, dtype=dtype))
        self.register_parameter(gain_name, gain)
        self.reset_parameters()

    @property
    def gain(self) -> Tensor:
        return self._parameters[self.gain_name]  # type: ignore[return-value]

    def reset_parameters(self) -> None:
        if not self.gain.is_meta:  # no values to fill
            nn.init.constant_(self.gain, self.init_value)

    def forward(self, x: Tensor) -> Tensor:
        gain = self.gain
        if self.dim in (-1, x.dim() - 1):
            return x * gain  # (..., C) * (C,)
        shape = [1] * x.dim()
        shape[self.dim] = self.num_features
        return x * gain.view(shape)  # (..., C, ...) * (1, .., C, 1, ..)

    def extra_repr(self) -> str:
        name = "" if self.gain_name == "gamma" else f", gain_name={self.gain_name}"
        return f"{self.num_features}, dim={self.dim}, init_value={self.init_value}{name}"
