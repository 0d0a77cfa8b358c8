"""Convolutions (archcomp/ops/conv.py): conv1d/2d and conv_transpose1d/2d. Shapes on concrete
and symbolic inputs, located errors, inferred in_channels, parameters and MACs against the real
torch modules, numerics and gradients against torch.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lowering import (
    assert_typed,
    check_declared,
    compile_for_test,
    compile_spec,
    fails,
    macs,
    out,
    run,
    spec,
)
from numerics import assert_same
from torch import nn

from archcomp import load_graph
from archcomp.ir import TensorType
from archcomp.ir.dims import Sym, add, floordiv, mul, substitute

B, H, W, L = (Sym.symbol(n) for n in "BHWL")


OPS = {
    "conv1d": ("conv", "Conv"),
    "conv2d": ("conv", "Conv"),
    "conv_transpose1d": ("conv", "Transposed Conv"),
    "conv_transpose2d": ("conv", "Transposed Conv"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def test_conv_shapes() -> None:
    assert out("x: [B, 3, 32, 32]", "op: conv2d, out_channels: 8, kernel_size: 3") == (B, 8, 30, 30)
    assert out(
        "x: [B, 3, 32, 32]", "op: conv2d, out_channels: 8, kernel_size: 3, padding: 1, stride: 2"
    ) == (B, 8, 16, 16)
    assert out(
        "x: [B, 3, 32, 20]", "op: conv2d, out_channels: 8, kernel_size: [5, 3], padding: [2, 0]"
    ) == (B, 8, 32, 18)
    assert out("x: [B, 3, 32, 32]", "op: conv2d, out_channels: 8, kernel_size: 3, dilation: 2") == (
        B,
        8,
        28,
        28,
    )
    assert out(
        "x: [B, 3, 32, 31]", "op: conv2d, out_channels: 8, kernel_size: 4, padding: same"
    ) == (B, 8, 32, 31)
    assert out(
        "x: [B, 3, 32, 31]", "op: conv2d, out_channels: 8, kernel_size: 3, padding: valid"
    ) == (
        B,
        8,
        30,
        29,
    )
    assert out("x: [B, 16, 100]", "op: conv1d, out_channels: 4, kernel_size: 5, stride: 3") == (
        B,
        4,
        32,
    )


def test_conv_symbolic_spatial_dims_stay_symbolic() -> None:
    shape = out("x: [B, 3, H, W]", "op: conv2d, out_channels: 8, kernel_size: 3, padding: 1")
    assert shape == (B, 8, H, W)
    shape = out("x: [B, 3, H, W]", "op: conv2d, out_channels: 8, kernel_size: 3, stride: 2")
    assert shape == (B, 8, add(floordiv(add(H, -3), 2), 1), add(floordiv(add(W, -3), 2), 1))
    assert str(shape[2]) == "floor((H - 3)/2) + 1"
    shape = out("x: [B, 3, L]", "op: conv1d, out_channels: 8, kernel_size: 3, padding: same")
    assert shape == (B, 8, Sym.symbol("L"))


def test_conv_infers_in_channels_and_params_and_macs() -> None:
    g = load_graph(
        spec(
            "x: [B, 6, 32, 32]", "- {id: n, op: conv2d, out_channels: 8, kernel_size: 3, groups: 2}"
        )
    )
    node = g.nodes["n"]
    assert node.args.in_channels == 6  # type: ignore[attr-defined]
    assert node.op.param_shapes(node.args) == {"weight": (8, 3, 3, 3), "bias": (8,)}
    assert macs(g, "n") == mul(B, 8 * 30 * 30 * 3 * 9)
    g = load_graph(
        spec("x: [B, 4, L]", "- {id: n, op: conv1d, out_channels: 2, kernel_size: 5, bias: false}")
    )
    node = g.nodes["n"]
    assert node.op.param_shapes(node.args) == {"weight": (2, 4, 5)}


def test_conv_errors() -> None:
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: 9",
        "kernel_size 9 is larger than the input along dim 2 (size 8)",
        "9}",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: [3, 12], padding: 1",
        "kernel_size 12 is larger than the input along dim 3 (size 8 + 2*1 padding)",
        "[3",
    )
    fails(
        "x: [B, 3, 8]",
        "op: conv1d, out_channels: 4, kernel_size: 3, dilation: 4",
        "kernel_size 3 (dilated to 9) is larger than the input along dim 2 (size 8)",
        "3,",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: 3, groups: 2",
        "groups=2 must divide in_channels (3) and out_channels (4)",
        "2}",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: 3, stride: 0",
        "'stride': input should be greater than 0, found 0",
        "0}",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: [3, 3, 3]",
        "kernel_size has 3 values, this op needs 2",
        "[3",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: 3, stride: 2, padding: same",
        "padding 'same' needs stride 1 (torch does not support it for strided convs)",
        "same",
    )
    fails(
        "x: [B, 3, 8]",
        "op: conv2d, out_channels: 4, kernel_size: 3",
        "conv2d (B, C, H, W) expects a rank-4 input, found [B, 3, 8]",
        "conv2d",
    )
    fails(
        "x: [B, C, 8]",
        "op: conv1d, out_channels: 4, kernel_size: 3",
        "the channel dim (dim 1) must be a concrete size, found symbolic 'C'",
        "conv1d",
    )
    fails(
        "x: [B, 3, 8]",
        "op: conv1d, out_channels: 4, kernel_size: 3, in_channels: 4",
        "in_channels is 4 but the input gives 3",
        "4}",
    )
    fails(
        "x: [B, 3, 8]",
        "op: conv1d, out_channels: 4, kernel_size: 3, padding_mode: reflect",
        "'padding_mode': expected 'zeros', found string 'reflect'",
        "reflect",
    )


def test_lower_conv_numerics_and_state() -> None:
    text = spec(
        "x: [2, 4, 11, 9]\n  s: [2, 4, 17]",
        """
        - {id: c1, op: conv2d, in: x, out_channels: 6, kernel_size: [3, 2],
           stride: 2, padding: [1, 0]}
        - {id: c2, op: conv2d, out_channels: 6, kernel_size: 3, padding: same,
           groups: 3, bias: false}
        - {id: c3, op: conv2d, out_channels: 2, kernel_size: 2, dilation: 2, padding: valid}
        - {id: d1, op: conv1d, in: s, out_channels: 8, kernel_size: 5, stride: 3,
           padding: 2, groups: 4}
        """,
        "{y: c3, z: d1}",
    )
    g, gm = compile_spec(text)
    assert isinstance(gm.c1, nn.Conv2d) and isinstance(gm.d1, nn.Conv1d)
    assert "c1.weight" in gm.state_dict()
    x, s = torch.randn(2, 4, 11, 9), torch.randn(2, 4, 17)
    got = run(gm, x, s)
    y = F.conv2d(x, gm.c1.weight, gm.c1.bias, stride=2, padding=(1, 0))
    y = F.conv2d(y, gm.c2.weight, None, padding=1, groups=3)
    y = F.conv2d(y, gm.c3.weight, gm.c3.bias, dilation=2)
    z = F.conv1d(s, gm.d1.weight, gm.d1.bias, stride=3, padding=2, groups=4)
    assert_same(got["y"], y)
    assert_same(got["z"], z)
    for k, v in (("y", y), ("z", z)):
        t = g.output_types[k]
        assert t is not None and tuple(v.shape) == t.shape


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_lower_conv_same_padding_even_kernel() -> None:
    """An even kernel pads one more on the right, as torch does (torch warns about a copy)."""
    g, gm = compile_spec(
        spec(
            "x: [2, 3, 7, 8]",
            "- {id: n, op: conv2d, out_channels: 4, kernel_size: [4, 2], padding: same}",
        )
    )
    x = torch.randn(2, 3, 7, 8)
    want = F.conv2d(F.pad(x, (0, 1, 1, 2)), gm.n.weight, gm.n.bias)
    assert_same(run(gm, x)["y"], want)
    assert g.output_types["y"] == TensorType((2, 4, 7, 8))


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
