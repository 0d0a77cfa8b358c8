"""Ops for U-Nets, ViTs and autoencoders: conv_transpose1d/2d, upsample, mean, sum.

Shape inference on concrete and symbolic inputs, located errors, parameter shapes against the
real torch modules, MACs, and numerics (and conv_transpose gradients) of each lowering through
the real compiler (tests/lowering.py), against torch.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lowering import check_declared, compile_for_test, run
from numerics import assert_same
from test_ops_tensor import check_state, fails, macs, out, spec
from torch import nn

from archcomp import load_graph
from archcomp.backends.torch.module import ArchModule
from archcomp.ir import Graph, TensorType
from archcomp.ir.dims import Sym, add, mul, substitute

B, H, W, L = (Sym.symbol(n) for n in "BHWL")


def compile_spec(text: str) -> tuple[Graph, ArchModule]:
    g = load_graph(text)
    gm = compile_for_test(g)
    check_state(g, gm)  # params= is exactly the lowered module's parameters
    return g, gm


def assert_typed(g: Graph, name: str, value: torch.Tensor) -> None:
    """The checked output type is the tensor torch computed (shape and dtype)."""
    t = g.output_types[name]
    assert t is not None
    assert t.shape == tuple(value.shape), name
    assert t.dtype == str(value.dtype).removeprefix("torch."), name


# -- declarations ----------------------------------------------------------------------------

OPS = {
    "conv_transpose1d": ("conv", "Transposed Conv"),
    "conv_transpose2d": ("conv", "Transposed Conv"),
    "upsample": ("pool", "Upsample"),
    "mean": ("arith", "Mean"),
    "sum": ("arith", "Sum"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


# -- conv_transpose --------------------------------------------------------------------------


def test_conv_transpose_shapes() -> None:
    ct2 = "op: conv_transpose2d, out_channels: 8"
    assert out("x: [B, 4, 16, 16]", f"{ct2}, kernel_size: 2, stride: 2") == (B, 8, 32, 32)
    assert out("x: [B, 4, 16, 16]", f"{ct2}, kernel_size: 3") == (B, 8, 18, 18)
    assert out("x: [B, 4, 16, 16]", f"{ct2}, kernel_size: 3, stride: 2, padding: 1") == (
        B,
        8,
        31,
        31,
    )
    assert out(
        "x: [B, 4, 16, 16]",
        f"{ct2}, kernel_size: 3, stride: 2, padding: 1, output_padding: 1",
    ) == (B, 8, 32, 32)
    assert out(
        "x: [B, 4, 16, 10]",
        f"{ct2}, kernel_size: [3, 5], stride: [1, 3], padding: [0, 2], dilation: [2, 1]",
    ) == (B, 8, 20, 28)
    ct = nn.ConvTranspose2d(4, 8, (3, 5), (1, 3), (0, 2), dilation=(2, 1))
    assert ct(torch.zeros(1, 4, 16, 10)).shape[2:] == (20, 28)
    # output_padding may exceed the stride when below the dilation
    assert out(
        "x: [B, 4, 7]",
        "op: conv_transpose1d, out_channels: 2, kernel_size: 3, dilation: 3, output_padding: 2",
    ) == (B, 2, 15)


def test_conv_transpose_symbolic() -> None:
    shape = out(
        "x: [B, 4, H, W]",
        "op: conv_transpose2d, out_channels: 2, kernel_size: 4, stride: 2, padding: 1",
    )
    assert shape == (B, 2, mul(H, 2), mul(W, 2))
    shape = out("x: [B, 4, L]", "op: conv_transpose1d, out_channels: 2, kernel_size: 3, stride: 3")
    assert shape == (B, 2, mul(L, 3))
    shape = out("x: [B, 4, L]", "op: conv_transpose1d, out_channels: 2, kernel_size: 5, padding: 1")
    assert shape == (B, 2, add(L, 2))
    assert str(shape[2]) == "L + 2"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ("kernel_size: 3, stride: 2", {"stride": 2}),
        ("kernel_size: 4, stride: 3, padding: 2, output_padding: 2", {"stride": 3, "padding": 2,
                                                                      "output_padding": 2}),
        ("kernel_size: 2, stride: 2, padding: 3, dilation: 4, output_padding: 3",
         {"stride": 2, "padding": 3, "dilation": 4, "output_padding": 3}),
    ],
)  # fmt: skip
def test_conv_transpose_symbolic_length_agrees_with_torch(args: str, kwargs: dict) -> None:
    """The symbolic length, evaluated at L = 2..20, is torch's output length."""
    shape = out("x: [1, 1, L]", f"op: conv_transpose1d, out_channels: 1, {args}")
    k = int(args.split(",")[0].split(": ")[1])
    for n in range(2, 21):
        want = F.conv_transpose1d(torch.zeros(1, 1, n), torch.ones(1, 1, k), **kwargs).shape[2]
        assert substitute(shape[2], {"L": n}) == want, n


def test_conv_transpose_infers_in_channels_params_and_macs() -> None:
    g = load_graph(
        spec(
            "x: [B, 6, 8, 8]",
            "- {id: n, op: conv_transpose2d, out_channels: 4, kernel_size: [3, 2], groups: 2}",
        )
    )
    node = g.nodes["n"]
    assert node.args.in_channels == 6  # type: ignore[attr-defined]
    # torch keeps the weight as (in_channels, out_channels / groups, *kernel_size)
    assert node.op.param_shapes(node.args) == {"weight": (6, 2, 3, 2), "bias": (4,)}
    want = nn.ConvTranspose2d(6, 4, (3, 2), groups=2)
    assert {k: tuple(p.shape) for k, p in want.named_parameters()} == node.op.param_shapes(
        node.args
    )
    # every input element goes through (out_channels / groups) * prod(kernel) multiply-adds
    assert macs(g, "n") == mul(B, 6 * 8 * 8 * 2 * 6)
    g = load_graph(
        spec(
            "x: [B, 3, L]",
            "- {id: n, op: conv_transpose1d, out_channels: 5, kernel_size: 4, bias: false}",
        )
    )
    node = g.nodes["n"]
    assert node.op.param_shapes(node.args) == {"weight": (3, 5, 4)}
    assert macs(g, "n") == mul(mul(B, L), 3 * 5 * 4)


def test_conv_transpose_macs_count_torch_multiplies() -> None:
    """The MAC count is the multiplies of a transposed conv done by hand, input by input."""
    g = load_graph(
        spec(
            "x: [2, 4, 5]",
            "- {id: n, op: conv_transpose1d, out_channels: 6, kernel_size: 3, stride: 2, "
            "groups: 2}",
        )
    )
    # each of the 2*4*5 inputs meets 6/2 output channels times 3 taps
    assert macs(g, "n") == 2 * 4 * 5 * 3 * 3


def test_conv_transpose_errors() -> None:
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv_transpose2d, out_channels: 4, kernel_size: 3, groups: 2",
        "groups=2 must divide in_channels (3) and out_channels (4)",
        "2}",
    )
    fails(
        "x: [B, 4, 8, 8]",
        "op: conv_transpose2d, out_channels: 3, kernel_size: 3, groups: 2",
        "groups=2 must divide in_channels (4) and out_channels (3)",
        "2}",
    )
    fails(
        "x: [B, 4, 8]",
        "op: conv_transpose1d, out_channels: 4, kernel_size: 3, output_padding: 1",
        "output_padding 1 must be smaller than stride (1) or dilation (1) along dim 2",
        "1}",
    )
    fails(
        "x: [B, 4, 8, 8]",
        "op: conv_transpose2d, out_channels: 4, kernel_size: 3, stride: [2, 3], "
        "output_padding: [1, 3]",
        "output_padding 3 must be smaller than stride (3) or dilation (1) along dim 3",
        "[1, 3]",
    )
    fails(
        "x: [B, 4, 1]",
        "op: conv_transpose1d, out_channels: 4, kernel_size: 1, padding: 1",
        "padding 1 leaves no output along dim 2 (size 1 gives -1)",
        "1}",
    )
    fails(
        "x: [B, 4, 8, 8]",
        "op: conv_transpose2d, out_channels: 4, kernel_size: [3, 3, 3]",
        "kernel_size has 3 values, this op needs 2",
        "[3",
    )
    fails(
        "x: [B, 4, 8, 8]",
        "op: conv_transpose2d, out_channels: 4, kernel_size: 3, output_padding: [1]",
        "output_padding has 1 values, this op needs 2",
        "[1]",
    )
    fails(
        "x: [B, 4, 8]",
        "op: conv_transpose2d, out_channels: 4, kernel_size: 3",
        "conv_transpose2d (B, C, H, W) expects a rank-4 input, found [B, 4, 8]",
        "conv_transpose2d",
    )
    fails(
        "x: [B, C, 8]",
        "op: conv_transpose1d, out_channels: 4, kernel_size: 3",
        "the channel dim (dim 1) must be a concrete size, found symbolic 'C'",
        "conv_transpose1d",
    )
    fails(
        "x: {shape: [B, 4, 8], dtype: int64}",
        "op: conv_transpose1d, out_channels: 4, kernel_size: 3",
        "conv_transpose1d needs a floating-point input, found int64",
        "conv_transpose1d",
    )
    fails(
        "x: [B, 4, 8]",
        "op: conv_transpose1d, out_channels: 4, kernel_size: 3, in_channels: 2",
        "in_channels is 2 but the input gives 4",
        "2}",
    )
    fails(
        "x: [B, 4, 8]",
        "op: conv_transpose1d, out_channels: 4, kernel_size: 3, stride: 0",
        "'stride': input should be greater than 0, found 0",
        "0}",
    )
    fails(
        "x: [B, 4, 8]",
        "op: conv_transpose1d, out_channels: 4, kernel_size: 3, padding: -1",
        "'padding': input should be greater than or equal to 0, found -1",
        "-1}",
    )


def test_conv_transpose_torch_rejects_what_the_checker_rejects() -> None:
    """The output_padding rule is torch's own: torch refuses the same settings."""
    with pytest.raises(RuntimeError, match="output padding must be smaller"):
        nn.ConvTranspose1d(4, 4, 3, output_padding=1)(torch.zeros(1, 4, 8))
    nn.ConvTranspose1d(4, 4, 3, dilation=2, output_padding=1)(torch.zeros(1, 4, 8))


def test_lower_conv_transpose_numerics_gradients_and_state() -> None:
    text = spec(
        "x: [2, 4, 5, 6]\n  s: [2, 6, 7]",
        """
        - {id: c1, op: conv_transpose2d, in: x, out_channels: 6, kernel_size: [3, 2],
           stride: 2, padding: [1, 0], output_padding: [1, 0]}
        - {id: c2, op: conv_transpose2d, out_channels: 4, kernel_size: 3, dilation: 2,
           groups: 2, bias: false}
        - {id: d1, op: conv_transpose1d, in: s, out_channels: 3, kernel_size: 4, stride: 3,
           padding: 2, output_padding: 1, groups: 3}
        """,
        "{y: c2, z: d1}",
    )
    g, gm = compile_spec(text)
    assert isinstance(gm.c1, nn.ConvTranspose2d) and isinstance(gm.d1, nn.ConvTranspose1d)
    assert gm.c1.output_padding == (1, 0) and gm.c2.dilation == (2, 2) and gm.d1.groups == 3
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    s = torch.randn(2, 6, 7, requires_grad=True)
    got = run(gm, x, s)
    y = F.conv_transpose2d(
        x, gm.c1.weight, gm.c1.bias, stride=2, padding=(1, 0), output_padding=(1, 0)
    )
    y = F.conv_transpose2d(y, gm.c2.weight, None, dilation=2, groups=2)
    z = F.conv_transpose1d(
        s, gm.d1.weight, gm.d1.bias, stride=3, padding=2, output_padding=1, groups=3
    )
    assert_same(got["y"], y)
    assert_same(got["z"], z)
    assert_typed(g, "y", y)
    assert_typed(g, "z", z)
    # gradients of the compiled model are those of torch's functional ops
    wrt = (x, s, gm.c1.weight, gm.c1.bias, gm.c2.weight, gm.d1.weight, gm.d1.bias)
    upstream = (torch.randn_like(y), torch.randn_like(z))
    got_grads = torch.autograd.grad((got["y"], got["z"]), wrt, upstream)
    want_grads = torch.autograd.grad((y, z), wrt, upstream)
    for a, b in zip(got_grads, want_grads, strict=True):
        assert_same(a, b)


def test_conv_transpose_undoes_conv_shape_in_a_unet_step() -> None:
    """A strided conv and its transpose give back the input size (the U-Net pattern)."""
    text = spec(
        "x: [B, 8, H, W]",
        """
        - {id: down, op: conv2d, out_channels: 16, kernel_size: 2, stride: 2}
        - {id: n, op: conv_transpose2d, out_channels: 8, kernel_size: 2, stride: 2}
        """,
    )
    g = load_graph(text)
    t = g.output_types["y"]
    assert t is not None
    # floor(H/2)*2 is H only for even H: the checker keeps it symbolic, not H
    assert substitute(t.shape[2], {"H": 32}) == 32
    assert substitute(t.shape[2], {"H": 33}) == 32
    gm = compile_for_test(g)
    assert tuple(run(gm, torch.randn(1, 8, 12, 10))["y"].shape) == (1, 8, 12, 10)


# -- upsample --------------------------------------------------------------------------------


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


# -- mean, sum -------------------------------------------------------------------------------


def test_reduce_shapes() -> None:
    assert out("x: [B, S, 64]", "op: mean, dim: 1") == (B, 64)
    S = Sym.symbol("S")
    assert out("x: [B, S, 64]", "op: mean, dim: -1, keepdim: true") == (B, S, 1)
    assert out("x: [B, 3, H, W]", "op: mean, dim: [2, 3]") == (B, 3)  # global average pool
    assert out("x: [B, 3, H, W]", "op: sum, dim: [-1, -2], keepdim: true") == (B, 3, 1, 1)
    assert out("x: [B, 3, H, W]", "op: sum, dim: [3, 0]") == (3, H)
    assert out("x: [B, 3]", "op: mean, dim: [0, 1]") == ()


@pytest.mark.parametrize(
    ("dtype", "result"),
    [("float32", "float32"), ("float16", "float16"), ("int32", "int64"), ("bool", "int64")],
)
def test_sum_dtype_as_torch(dtype: str, result: str) -> None:
    g = load_graph(spec(f"x: {{shape: [B, 4], dtype: {dtype}}}", "- {id: n, op: sum, dim: 1}"))
    assert g.output_types["y"] == TensorType((B,), result)
    assert str(torch.zeros(2, 4, dtype=getattr(torch, dtype)).sum(1).dtype) == f"torch.{result}"


def test_reduce_errors() -> None:
    fails(
        "x: {shape: [B, 4], dtype: int64}",
        "op: mean, dim: 1",
        "mean needs a floating-point input, found int64",
        "mean",
    )
    fails("x: [B, 4]", "op: sum, dim: 2", "dim=2 is out of range for a rank-2 tensor", "2}")
    fails("x: [B, 4]", "op: mean, dim: [0, -3]", "dim=-3 is out of range for a rank-2 tensor", "[0")
    fails(
        "x: [B, 4, 5]",
        "op: sum, dim: [1, -2]",
        "dim 1 appears more than once in dim=[1, -2] (rank-3 input)",
        "[1",
    )
    fails(
        "x: [B, 4]",
        "op: mean, dim: []",
        "'dim': needs at least 1 entry, found []",
        "[]",
    )
    fails("x: [B, 4]", "op: sum", "missing required argument 'dim'", "{id")
    fails(
        "x: [B, 4]",
        "op: sum, dim: 1, keepdim: 1",
        "'keepdim': expected a bool, found int 1",
        "1}",
    )


def test_torch_rejects_repeated_dims() -> None:
    with pytest.raises(RuntimeError, match="appears multiple times"):
        torch.sum(torch.zeros(2, 3, 4), (1, -2))


def test_lower_reduce_numerics() -> None:
    text = spec(
        "x: [2, 3, 5, 4]\n  m: {shape: [2, 7], dtype: bool}\n  i: {shape: [2, 7], dtype: int32}",
        """
        - {id: gap, op: mean, in: x, dim: [2, 3]}
        - {id: mk, op: mean, in: x, dim: -1, keepdim: true}
        - {id: s, op: sum, in: x, dim: [0, -1]}
        - {id: sk, op: sum, in: x, dim: 1, keepdim: true}
        - {id: count, op: sum, in: m, dim: 1}
        - {id: total, op: sum, in: i, dim: [0, 1]}
        """,
        "{gap: gap, mk: mk, s: s, sk: sk, count: count, total: total}",
    )
    g, gm = compile_spec(text)
    x = torch.randn(2, 3, 5, 4)
    m = torch.rand(2, 7) > 0.5
    i = torch.randint(-5, 5, (2, 7), dtype=torch.int32)
    got = run(gm, x, m, i)
    want = {
        "gap": x.mean((2, 3)),
        "mk": x.mean(-1, keepdim=True),
        "s": x.sum((0, -1)),
        "sk": x.sum(1, keepdim=True),
        "count": m.sum(1),
        "total": i.sum((0, 1)),
    }
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert_same(got[k], v, msg=k)
        assert_typed(g, k, v)
    # the generated forward reads as torch code
    assert "gap = torch.mean(x, (2, 3))" in gm.code
    assert "sk = torch.sum(x, 1, keepdim = True)" in gm.code


def test_reduce_in_a_vit_head() -> None:
    """Mean-pool the tokens, then classify: the shape flows through symbolic B and S."""
    text = spec(
        "x: [B, S, 32]",
        """
        - {id: pool, op: mean, dim: 1}
        - {id: n, op: linear, out_features: 10}
        """,
    )
    g, gm = compile_spec(text)
    assert g.output_types["y"] == TensorType((B, 10))
    x = torch.randn(3, 7, 32)
    assert_same(run(gm, x)["y"], F.linear(x.mean(1), gm.n.weight, gm.n.bias))
