"""Upsampling (archcomp/ops/resample.py): shapes on concrete and symbolic inputs, errors the
checker and torch agree on, and numerics against F.interpolate.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lowering import assert_typed, check_declared, compile_spec, fails, out, run, spec
from numerics import assert_same

from archcomp.ir.dims import Sym, mul

B, H, W, L = (Sym.symbol(n) for n in "BHWL")


OPS = {"upsample": ("pool", "Upsample")}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def test_upsample_shapes() -> None:
    assert out("x: [B, 3, 8, 5]", "op: upsample, scale_factor: 2") == (B, 3, 16, 10)
    assert out("x: [B, 3, 8, 5]", "op: upsample, scale_factor: 2.0") == (B, 3, 16, 10)
    assert out("x: [B, 3, 8, 5]", "op: upsample, scale_factor: 1.5, mode: bilinear") == (
        B,
        3,
        12,
        7,
    )
    assert out("x: [B, 3, 8, 5]", "op: upsample, scale_factor: [0.5, 3]") == (B, 3, 4, 15)
    assert out("x: [B, 3, 8, 5]", "op: upsample, size: 7, mode: bicubic") == (B, 3, 7, 7)
    assert out("x: [B, 3, 8, 5]", "op: upsample, size: [9, 2]") == (B, 3, 9, 2)
    assert out("x: [B, 3, 10]", "op: upsample, scale_factor: 2.5, mode: linear") == (B, 3, 25)
    assert out("x: [B, 3, 10]", "op: upsample, size: [4], mode: linear") == (B, 3, 4)


def test_upsample_symbolic() -> None:
    assert out("x: [B, 3, H, W]", "op: upsample, scale_factor: 2") == (B, 3, mul(H, 2), mul(W, 2))
    assert out("x: [B, 3, H, W]", "op: upsample, scale_factor: [1, 4], mode: bilinear") == (
        B,
        3,
        H,
        mul(W, 4),
    )
    # a fractional factor on a concrete dim is fine next to a symbolic one
    assert out("x: [B, 3, 6, W]", "op: upsample, scale_factor: [1.5, 2]") == (B, 3, 9, mul(W, 2))
    assert out("x: [B, 3, H, W]", "op: upsample, size: [32, 32]") == (B, 3, 32, 32)
    assert out("x: [B, 3, L]", "op: upsample, scale_factor: 3, mode: linear") == (B, 3, mul(L, 3))


def test_upsample_errors() -> None:
    fails(
        "x: [B, 3, H, W]",
        "op: upsample, scale_factor: 1.5",
        "scale_factor 1.5 on symbolic dim 2 ('H') has no exact size",
        "1.5",
    )
    fails(
        "x: [B, 3, 8, W]",
        "op: upsample, scale_factor: [2, 0.5]",
        "scale_factor 0.5 on symbolic dim 3 ('W') has no exact size",
        "[2",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: upsample",
        "upsample needs exactly one of scale_factor and size",
        "upsample",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: upsample, scale_factor: 2, size: 16",
        "upsample needs exactly one of scale_factor and size",
        "16}",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: upsample, scale_factor: 0",
        "'scale_factor': input should be greater than 0, found 0",
        "0}",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: upsample, scale_factor: 0.1",
        "scale_factor 0.1 leaves no output along dim 2 (floor(8 * 0.1) = 0)",
        "0.1",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: upsample, scale_factor: [2, 2, 2]",
        "scale_factor has 3 values, this input has 2 spatial dims",
        "[2",
    )
    fails(
        "x: [B, 3, 8]",
        "op: upsample, size: [4, 4], mode: linear",
        "size has 2 values, this input has 1 spatial dim",
        "[4",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: upsample, scale_factor: 2, mode: linear",
        "upsample mode 'linear' expects a rank-3 input (B, C, L), found [B, 3, 8, 8]",
        "linear",
    )
    fails(
        "x: [B, 3, 8]",
        "op: upsample, scale_factor: 2, mode: bicubic",
        "upsample mode 'bicubic' expects a rank-4 input (B, C, H, W), found [B, 3, 8]",
        "bicubic",
    )
    fails(
        "x: [B, 8]",
        "op: upsample, scale_factor: 2",
        "upsample mode 'nearest' expects a rank-3 or 4 input (B, C, L) or (B, C, H, W), "
        "found [B, 8]",
        "upsample",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: upsample, scale_factor: 2, align_corners: true",
        "align_corners is only for the interpolating modes (linear, bilinear, bicubic)",
        "true",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: upsample, scale_factor: 2, mode: trilinear",
        "'mode': expected 'nearest', 'linear', 'bilinear' or 'bicubic', found string 'trilinear'",
        "trilinear",
    )
    fails(
        "x: {shape: [B, 3, 8, 8], dtype: int64}",
        "op: upsample, scale_factor: 2",
        "upsample needs a floating-point input, found int64",
        "upsample",
    )


def test_upsample_torch_rejects_what_the_checker_rejects() -> None:
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="align_corners option can only be set"):
        F.interpolate(x, scale_factor=2, mode="nearest", align_corners=True)
    with pytest.raises(NotImplementedError):
        F.interpolate(x, scale_factor=2, mode="linear")


@pytest.mark.parametrize(
    ("shape", "node", "kwargs"),
    [
        ((2, 3, 5, 7), "scale_factor: 2", {"scale_factor": 2.0}),
        ((2, 3, 5, 7), "scale_factor: [1.5, 0.6]", {"scale_factor": (1.5, 0.6)}),
        ((2, 3, 5, 7), "size: [8, 3]", {"size": (8, 3)}),
        ((2, 3, 5, 7), "size: 9, mode: bilinear", {"size": 9, "mode": "bilinear"}),
        (
            (2, 3, 5, 7),
            "scale_factor: 2.5, mode: bilinear, align_corners: true",
            {"scale_factor": 2.5, "mode": "bilinear", "align_corners": True},
        ),
        (
            (2, 3, 5, 7),
            "scale_factor: 3, mode: bicubic, align_corners: false",
            {"scale_factor": 3.0, "mode": "bicubic", "align_corners": False},
        ),
        ((2, 3, 11), "scale_factor: 1.7, mode: linear", {"scale_factor": 1.7, "mode": "linear"}),
        ((2, 3, 11), "size: [4], mode: nearest", {"size": (4,)}),
    ],
)
def test_lower_upsample(shape: tuple[int, ...], node: str, kwargs: dict) -> None:
    dims = ", ".join(map(str, shape))
    g, gm = compile_spec(spec(f"x: [{dims}]", f"- {{id: n, op: upsample, {node}}}"))
    x = torch.randn(*shape)
    want = F.interpolate(x, **kwargs)
    assert_same(run(gm, x)["y"], want)
    assert_typed(g, "y", want)
    assert "n = torch.nn.functional.interpolate(x, " in gm.code


def test_lower_upsample_code_spells_whole_factors_as_ints() -> None:
    _, gm = compile_spec(spec("x: [1, 2, 3, 4]", "- {id: n, op: upsample, scale_factor: [2, 1.5]}"))
    assert "scale_factor = (2, 1.5), mode = 'nearest'" in gm.code


def test_upsample_concrete_sizes_agree_with_torch() -> None:
    """floor(size * scale) as torch computes it, over many sizes and awkward factors."""
    for scale in (0.3, 0.5, 0.7, 1.1, 1.25, 1.3, 2.2, 2.5, 3.7):
        for n in range(4, 30):
            if math.floor(n * scale) < 1:
                continue
            shape = out(f"x: [1, 1, {n}]", f"op: upsample, scale_factor: {scale}")
            want = F.interpolate(torch.zeros(1, 1, n), scale_factor=scale).shape[2]
            assert shape[2] == want, (scale, n)
