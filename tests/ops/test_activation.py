"""Activations (archcomp/ops/activation.py): values and gradients against the torch.nn modules
and the formulas written out; glu's shapes and errors.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numerics
import pytest
import torch
from lowering import check_against, check_declared, compile_for_test, fails, out, run, spec
from numerics import RoundingChains
from torch import nn
from torch.testing import assert_close

from archcomp import load_graph
from archcomp.ir.dims import Sym

B, S = (Sym.symbol(n) for n in "BS")


OPS = {
    "leaky_relu": ("activation", "Leaky ReLU"),
    "elu": ("activation", "ELU"),
    "softplus": ("activation", "Softplus"),
    "hardswish": ("activation", "Hardswish"),
    "mish": ("activation", "Mish"),
    "glu": ("activation", "GLU"),
    "quick_gelu": ("activation", "QuickGELU"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


@pytest.mark.parametrize(
    ("node", "module"),
    [
        ("op: leaky_relu", nn.LeakyReLU()),
        ("op: leaky_relu, negative_slope: 0.2", nn.LeakyReLU(0.2)),
        ("op: elu", nn.ELU()),
        ("op: elu, alpha: 0.5", nn.ELU(0.5)),
        ("op: softplus", nn.Softplus()),
        ("op: softplus, beta: 2, threshold: 3", nn.Softplus(2, 3)),
        ("op: hardswish", nn.Hardswish()),
        ("op: mish", nn.Mish()),
        ("op: glu", nn.GLU()),
        ("op: glu, dim: 1", nn.GLU(1)),
    ],
)
def test_activations_match_torch_modules(node: str, module: nn.Module) -> None:
    check_against(node, module, {"x": (2, 6, 4)})


def test_activation_formulas() -> None:
    """The lowerings are the formulas (not only torch's modules agreeing with themselves)."""
    x = torch.linspace(-4, 4, 17).reshape(1, 17)
    formulas: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "op: leaky_relu, negative_slope: 0.1": lambda t: torch.where(t >= 0, t, 0.1 * t),
        "op: elu, alpha: 0.7": lambda t: torch.where(t > 0, t, 0.7 * (torch.exp(t) - 1)),
        "op: softplus, beta: 2": lambda t: torch.log1p(torch.exp(2 * t)) / 2,
        "op: hardswish": lambda t: t * torch.clamp(t + 3, 0, 6) / 6,
        "op: mish": lambda t: t * torch.tanh(torch.log1p(torch.exp(t))),
    }
    for node, formula in formulas.items():
        gm = compile_for_test(load_graph(spec("x: [1, 17]", f"- {{id: n, {node}}}")))
        assert_close(run(gm, x)["y"], formula(x), msg=node)
    gm = compile_for_test(load_graph(spec("x: [1, 8]", "- {id: n, op: glu}")))
    x = torch.randn(1, 8)
    assert_close(run(gm, x)["y"], x[:, :4] * torch.sigmoid(x[:, 4:]))


def test_glu_shapes_and_errors() -> None:
    assert out("x: [B, S, 8]", "op: glu") == (B, S, 4)
    assert out("x: [B, 6, S]", "op: glu, dim: 1") == (B, 3, S)
    fails(
        "x: [B, S, 7]",
        "op: glu",
        "glu halves dim 2, but its size 7 is not even",
        "glu",
    )
    fails("x: [B, S, 8]", "op: glu, dim: 1", "glu halves dim 1, but its size S is not even", "1}")
    fails("x: [B, 8]", "op: glu, dim: 2", "dim=2 is out of range for a rank-2 tensor", "2}")
    fails(
        "x: [B, 8]",
        "op: softplus, beta: 0",
        "'beta': input should be greater than 0, found 0",
        "0}",
    )


@pytest.mark.parametrize(
    ("node", "formula"),
    [
        ("op: relu", lambda t: torch.where(t > 0, t, torch.zeros_like(t))),
        ("op: sigmoid", lambda t: 1 / (1 + torch.exp(-t))),
        ("op: tanh", lambda t: (torch.exp(t) - torch.exp(-t)) / (torch.exp(t) + torch.exp(-t))),
        ("op: silu", lambda t: t / (1 + torch.exp(-t))),
        ("op: gelu", lambda t: 0.5 * t * (1 + torch.erf(t / math.sqrt(2)))),
        (
            "op: gelu, approximate: tanh",
            lambda t: 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t**3))),
        ),
        ("op: softmax", lambda t: torch.exp(t) / torch.exp(t).sum(-1, keepdim=True)),
        ("op: softmax, dim: 1", lambda t: torch.exp(t) / torch.exp(t).sum(1, keepdim=True)),
        ("op: log_softmax", lambda t: t - torch.log(torch.exp(t).sum(-1, keepdim=True))),
    ],
)
def test_core_activations_are_their_formulas(
    node: str, formula: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """Forward values and gradients against the formula written out in torch."""
    check_against(node, formula, {"x": (2, 6, 4)})


def _quick_gelu_check(formula: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """quick_gelu against ``formula``: forward and input gradient, by the NUMERICS.md rule."""
    gm = compile_for_test(load_graph(spec("x: [2, 6, 4]", "- {id: n, op: quick_gelu}")))
    torch.manual_seed(0)
    x = (torch.randn(2, 6, 4) * 3).requires_grad_()
    with RoundingChains() as chains:
        y = run(gm, x)["y"]
        want = formula(x)
        w = torch.randn_like(want)
        got_g, want_g = (torch.autograd.grad((t * w).sum(), x)[0] for t in (y, want))
    numerics.assert_close(y, want, chains.tolerance(torch.float32, y, want))
    numerics.assert_close(got_g, want_g, chains.tolerance(torch.float32))


def test_quick_gelu_matches_transformers_clip_activation() -> None:
    """CLIP's ``hidden_act: quick_gelu``: transformers' QuickGELUActivation, and the formula."""
    from transformers.activations import ACT2FN

    assert out("x: [B, S, 8]", "op: quick_gelu") == (B, S, 8)
    _quick_gelu_check(ACT2FN["quick_gelu"])
    _quick_gelu_check(lambda t: t / (1 + torch.exp(-1.702 * t)))
    with pytest.raises(AssertionError):  # a planted bug: the constant of GELU's tanh form
        _quick_gelu_check(lambda t: t * torch.sigmoid(1.5958 * t))
    with pytest.raises(AssertionError):  # the exact GELU it approximates
        _quick_gelu_check(nn.GELU())
    fails(
        "x: {shape: [B, 8], dtype: int64}",
        "op: quick_gelu",
        "this op needs a floating-point input, found int64",
        "quick_gelu",
    )
