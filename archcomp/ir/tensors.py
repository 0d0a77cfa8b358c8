"""The type of a tensor in the IR: a shape of ints and symbols, and a dtype name."""

from __future__ import annotations

from dataclasses import dataclass

from archcomp.ir.dims import Shape, fmt_shape, to_json


@dataclass(frozen=True)
class TensorType:
    """Shape (ints and symbols) and dtype of a tensor."""

    shape: Shape
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return f"{fmt_shape(self.shape)} {self.dtype}"

    def to_json(self) -> list[int | str]:
        return [to_json(d) for d in self.shape]
