"""Pooling (archcomp/ops/pool.py): max/avg/adaptive pools, 1d and 2d. Shapes (symbolic
length formulas against torch's output sizes), errors and numerics against torch.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from lowering import check_declared, compile_spec, fails, out, run, spec
from numerics import assert_same

from archcomp.ir.dims import Sym, add, floordiv, substitute

B, H, W = (Sym.symbol(n) for n in "BHW")


OPS = {
    "max_pool1d": ("pool", "Max Pool"),
    "max_pool2d": ("pool", "Max Pool"),
    "avg_pool1d": ("pool", "Avg Pool"),
    "avg_pool2d": ("pool", "Avg Pool"),
    "adaptive_avg_pool1d": ("pool", "Adaptive Avg Pool"),
    "adaptive_avg_pool2d": ("pool", "Adaptive Avg Pool"),
    "adaptive_max_pool1d": ("pool", "Adaptive Max Pool"),
    "adaptive_max_pool2d": ("pool", "Adaptive Max Pool"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def test_pool_shapes() -> None:
    x = "x: [B, 3, 32, 31]"
    assert out(x, "op: max_pool2d, kernel_size: 2") == (B, 3, 16, 15)
    assert out(x, "op: max_pool2d, kernel_size: 2, ceil_mode: true") == (B, 3, 16, 16)
    assert out(x, "op: max_pool2d, kernel_size: 3, stride: 2, padding: 1") == (B, 3, 16, 16)
    assert out(x, "op: max_pool2d, kernel_size: 3, stride: 1, dilation: 2") == (B, 3, 28, 27)
    assert out(x, "op: avg_pool2d, kernel_size: [2, 3]") == (B, 3, 16, 10)
    assert out("x: [3, 32, 31]", "op: avg_pool2d, kernel_size: 2") == (3, 16, 15)  # unbatched
    assert out("x: [B, 4, 10]", "op: max_pool1d, kernel_size: 3") == (B, 4, 3)
    assert out("x: [B, 4, 10]", "op: avg_pool1d, kernel_size: 3, ceil_mode: true") == (B, 4, 4)
    # ceil_mode never starts a window in the right padding: torch gives 3, not 4
    assert out(
        "x: [1, 1, 5]", "op: max_pool1d, kernel_size: 2, stride: 2, padding: 1, ceil_mode: true"
    ) == (1, 1, 3)
    assert out(
        "x: [1, 1, 6]", "op: max_pool1d, kernel_size: 2, stride: 2, padding: 1, ceil_mode: true"
    ) == (1, 1, 4)


def test_pool_symbolic() -> None:
    shape = out("x: [B, C, H, W]", "op: max_pool2d, kernel_size: 2")
    assert shape[2:] == (add(floordiv(add(H, -2), 2), 1), add(floordiv(add(W, -2), 2), 1))
    shape = out("x: [B, C, H, W]", "op: max_pool2d, kernel_size: 3, stride: 1, padding: 1")
    assert shape[2:] == (H, W)
    # ceil_mode is decidable when no window can start in the padding
    shape = out("x: [B, C, H]", "op: avg_pool1d, kernel_size: 3, stride: 2, ceil_mode: true")
    assert str(shape[2]) == "floor((H - 2)/2) + 1"


@pytest.mark.parametrize(
    ("node", "fn"),
    [
        (
            "op: conv1d, out_channels: 1, kernel_size: 3, stride: 2",
            lambda x: F.conv1d(x, torch.ones(1, 1, 3), stride=2),
        ),
        (
            "op: conv1d, out_channels: 1, kernel_size: 2, stride: 3, padding: 2, dilation: 2",
            lambda x: F.conv1d(x, torch.ones(1, 1, 2), stride=3, padding=2, dilation=2),
        ),
        ("op: max_pool1d, kernel_size: 3, stride: 2", lambda x: F.max_pool1d(x, 3, 2)),
        (
            "op: max_pool1d, kernel_size: 3, stride: 2, ceil_mode: true",
            lambda x: F.max_pool1d(x, 3, 2, ceil_mode=True),
        ),
        (
            "op: avg_pool1d, kernel_size: 4, stride: 3, padding: 1",
            lambda x: F.avg_pool1d(x, 4, 3, 1),
        ),
    ],
)
def test_symbolic_sizes_agree_with_torch(
    node: str, fn: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """The symbolic length formula, evaluated at L = 5..20, is torch's output length."""
    shape = out("x: [1, 1, L]", node)
    for n in range(5, 21):
        assert substitute(shape[2], {"L": n}) == fn(torch.zeros(1, 1, n)).shape[2], n


def test_pool_errors() -> None:
    fails(
        "x: [B, 3, 8, 8]",
        "op: max_pool2d, kernel_size: 2, padding: 2",
        "padding 2 is more than half the kernel size 2",
        "2}",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: avg_pool2d, kernel_size: 3, padding: 2",
        "padding 2 is more than half the kernel size 3",
        "2}",
    )
    fails(
        "x: [B, 3, 4, 8]",
        "op: max_pool2d, kernel_size: 5",
        "kernel_size 5 is larger than the input along dim 2 (size 4)",
        "5}",
    )
    fails(
        "x: [B, 3, H]",
        "op: max_pool1d, kernel_size: 2, padding: 1, ceil_mode: true",
        "ceil_mode needs a concrete size along dim 2, found symbolic 'H'",
        "true",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: max_pool2d, kernel_size: 2, stride: [1, 1, 1]",
        "stride has 3 values, this op needs 2",
        "[1",
    )
    fails(
        "x: [B, 8]",
        "op: max_pool2d, kernel_size: 2",
        "max_pool2d (B, C, H, W) expects a rank-3 or 4 input, found [B, 8]",
        "max_pool2d",
    )


def test_adaptive_pool_shapes_and_errors() -> None:
    assert out("x: [B, 3, H, W]", "op: adaptive_avg_pool2d, output_size: 1") == (B, 3, 1, 1)
    assert out("x: [B, 3, H, W]", "op: adaptive_max_pool2d, output_size: [7, null]") == (B, 3, 7, W)
    assert out("x: [B, 3, L]", "op: adaptive_max_pool1d, output_size: 4") == (B, 3, 4)
    assert out("x: [3, L]", "op: adaptive_avg_pool1d, output_size: [4]") == (3, 4)
    fails(
        "x: [B, 3, 8]",
        "op: adaptive_avg_pool1d, output_size: [2, 2]",
        "output_size has 2 values, this op needs 1",
        "[2",
    )
    fails(
        "x: [B, 3, 8]",
        "op: adaptive_avg_pool1d, output_size: [null]",
        "output_size null (keep the input size) is only for 2-D pooling",
        "[null",
    )


@pytest.mark.parametrize(
    ("node", "fn"),
    [
        ("op: max_pool2d, kernel_size: 2", lambda x: F.max_pool2d(x, 2)),
        (
            "op: max_pool2d, kernel_size: 3, stride: 2, padding: 1, ceil_mode: true",
            lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
        ),
        (
            "op: max_pool2d, kernel_size: [2, 3], stride: 1, dilation: 2",
            lambda x: F.max_pool2d(x, (2, 3), 1, dilation=2),
        ),
        ("op: avg_pool2d, kernel_size: 3", lambda x: F.avg_pool2d(x, 3)),
        (
            "op: avg_pool2d, kernel_size: 3, stride: 2, padding: 1, count_include_pad: false",
            lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        ),
        ("op: adaptive_avg_pool2d, output_size: 1", lambda x: F.adaptive_avg_pool2d(x, 1)),
        (
            "op: adaptive_max_pool2d, output_size: [3, null]",
            lambda x: F.adaptive_max_pool2d(x, (3, None)),
        ),
    ],
)
def test_lower_pool2d(node: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    g, gm = compile_spec(spec("x: [2, 3, 13, 10]", f"- {{id: n, {node}}}"))
    x = torch.randn(2, 3, 13, 10)
    want = fn(x)
    assert_same(run(gm, x)["y"], want)
    t = g.output_types["y"]
    assert t is not None and t.shape == tuple(want.shape)


@pytest.mark.parametrize(
    ("node", "fn"),
    [
        ("op: max_pool1d, kernel_size: 2", lambda x: F.max_pool1d(x, 2)),
        (
            "op: max_pool1d, kernel_size: 2, stride: 2, padding: 1, ceil_mode: true",
            lambda x: F.max_pool1d(x, 2, 2, 1, ceil_mode=True),
        ),
        (
            "op: avg_pool1d, kernel_size: 4, stride: 3, ceil_mode: true",
            lambda x: F.avg_pool1d(x, 4, 3, ceil_mode=True),
        ),
        ("op: adaptive_avg_pool1d, output_size: 4", lambda x: F.adaptive_avg_pool1d(x, 4)),
        ("op: adaptive_max_pool1d, output_size: [3]", lambda x: F.adaptive_max_pool1d(x, 3)),
    ],
)
@pytest.mark.parametrize("size", [9, 10])
def test_lower_pool1d(node: str, fn: Callable[[torch.Tensor], torch.Tensor], size: int) -> None:
    g, gm = compile_spec(spec(f"x: [2, 3, {size}]", f"- {{id: n, {node}}}"))
    x = torch.randn(2, 3, size)
    want = fn(x)
    assert_same(run(gm, x)["y"], want)
    t = g.output_types["y"]
    assert t is not None and t.shape == tuple(want.shape)
