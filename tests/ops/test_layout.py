"""Moving elements (archcomp/ops/layout.py): roll and pad. Values and gradients against the
torch calls on the same tensors; symbolic shapes; located errors.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lowering import check_declared, check_torch, fails, out
from torch.nn import functional

from archcomp.ir.dims import Sym, add

B, H, W = (Sym.symbol(n) for n in "BHW")

OPS = {"roll": ("shape", "Roll"), "pad": ("shape", "Pad")}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("args", "shifts", "dims"),
    [("shifts: 2, dims: 1", 2, 1), ("shifts: [-3, -3], dims: [1, 2]", (-3, -3), (1, 2))],
)
def test_roll_is_torchs_with_gradients(args: str, shifts: Any, dims: Any) -> None:
    """Swin's cyclic shift of a [B, H, W, C] map."""
    x = _x(2, 7, 7, 3)
    check_torch(f"op: roll, {args}", lambda x: torch.roll(x, shifts, dims), {"x": x})
    check_torch(f"op: roll, {args}", lambda x: torch.roll(x, shifts, dims), {"x": x > 0})


@pytest.mark.parametrize(
    ("args", "pad", "kw"),
    [
        ("pad: [1, 2]", (1, 2), {}),
        ("pad: [0, 1, 2, 0], value: -1.5", (0, 1, 2, 0), {"value": -1.5}),
        ("pad: [-1, 1]", (-1, 1), {}),
        ("pad: [2, 2, 1, 1], mode: reflect", (2, 2, 1, 1), {"mode": "reflect"}),
        ("pad: [1, 0], mode: replicate", (1, 0), {"mode": "replicate"}),
        ("pad: [3, 3], mode: circular", (3, 3), {"mode": "circular"}),
        ("pad: [1, 1, 2, 1, 1, 0], mode: replicate", (1, 1, 2, 1, 1, 0), {"mode": "replicate"}),
    ],
)
def test_pad_is_torchs_with_gradients(args: str, pad: tuple[int, ...], kw: dict[str, Any]) -> None:
    """Edge modes pad the last 1-3 dims of a (batch, channels, ...) input: rank n+1 or n+2."""
    x = _x(*(2, 3, 5, 6, 4)[: len(pad) // 2 + 2])  # rank n+2 for n padded dims
    check_torch(f"op: pad, {args}", lambda x: functional.pad(x, pad, **kw), {"x": x})


def test_pad_keeps_integer_dtypes() -> None:
    ids = torch.arange(12).reshape(3, 4)
    check_torch("op: pad, pad: [0, 2], value: 7", lambda x: functional.pad(x, (0, 2), value=7),
                {"x": ids})  # fmt: skip


def test_a_wrong_reference_fails() -> None:
    x = _x(2, 5, 6)
    with pytest.raises(AssertionError):
        check_torch("op: roll, shifts: 1, dims: 1", lambda x: torch.roll(x, -1, 1), {"x": x})
    with pytest.raises(AssertionError):
        check_torch("op: pad, pad: [1, 2]", lambda x: functional.pad(x, (2, 1)), {"x": x})


def test_shapes_are_symbolic() -> None:
    assert out("x: [B, H, W, 3]", "op: roll, shifts: [1, 1], dims: [1, 2]") == (B, H, W, 3)
    assert out("x: [B, 3, H, W]", "op: pad, pad: [0, 1, 2, 2]") == (B, 3, add(H, 4), add(W, 1))


def test_errors_are_located() -> None:
    x = "x: [B, 3, 5, W]"
    fails(x, "op: roll, shifts: [1, 2], dims: 1", "shifts has 2 values for 1 dims", "[1, 2]")
    fails(x, "op: roll, shifts: [1, 2], dims: [1, 1]", "dims [1, 1] names a dim twice", "[1, 1]")
    fails(x, "op: roll, shifts: 1, dims: 4", "dims=4 is out of range for a rank-4 tensor", "4}")
    fails(x, "op: pad, pad: [1, 2, 3]", "pad has 3 values; it takes pairs (before, after)", "[1")
    fails(x, "op: pad, pad: [0, 0, -3, -2]", "pad crops dim 2 (size 5) to 0", "[0")
    fails(
        x,
        "op: pad, pad: [0, 0, 5, 0], mode: reflect",
        "reflect padding of 5 needs dim 2 larger than that, found 5",
        "[0",
    )
    fails(
        "x: [B, W]",
        "op: pad, pad: [1, 1, 1, 1], mode: replicate",
        "replicate padding of 2 dims needs a rank-3 or rank-4 input, found [B, W]",
        "replicate",
    )
    fails(
        x,
        "op: pad, pad: [1, 1], mode: reflect, value: 1",
        "value is only for mode constant, not reflect",
        "1}",
    )
    fails(
        "x: {shape: [B, 3, W], dtype: bool}",
        "op: pad, pad: [1, 1], mode: reflect",
        "reflect padding does not take a bool tensor (torch refuses it)",
        "reflect",
    )
    fails(
        "x: {shape: [B, W], dtype: int64}",
        "op: pad, pad: [1, 1], value: 0.5",
        "pad: value 0.5 is not a whole number, and the values are int64",
        "0.5",
    )
