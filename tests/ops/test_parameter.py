"""Learned tensors (archcomp/ops/parameter.py): parameter (a ViT class token: shapes, errors,
seeded default init, export with a dynamic batch) and layer_scale (shapes, errors, init, and
forward and gradients against a hand-written reference, channels last and first).

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

from collections.abc import Callable

import numerics
import pytest
import torch
from lowering import check_declared, compile_spec, errors_of, fails, macs, out, run, spec
from numerics import RoundingChains, assert_same
from torch.testing import assert_close

import archcomp
from archcomp import load_graph
from archcomp.ir.dims import Sym, mul

B, T, H, W = (Sym.symbol(n) for n in "BTHW")


OPS = {"parameter": ("embedding", "Parameter"), "layer_scale": ("arith", "Layer Scale")}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


VIT_TOKENS = spec(
    "x: [B, 4, 8]",
    """
    - {id: cls, op: parameter, shape: [1, 1, 8], init: zeros}
    - {id: cls_b, op: expand, in: {x: cls, like: x}, shape: [B, -1, -1]}
    - {id: tokens, op: concat, in: [cls_b, x], dim: 1}
    - {id: pos, op: parameter, shape: [1, 5, 8]}
    - {id: n, op: add, in: [tokens, pos]}
    """,
)


def test_parameter_and_expand_build_a_class_token() -> None:
    g, gm = compile_spec(VIT_TOKENS)
    assert g.nodes["cls"].outputs["out"].shape == (1, 1, 8)
    assert g.nodes["cls_b"].outputs["out"].shape == (B, 1, 8)
    assert g.output_types["y"].shape == (B, 5, 8)  # type: ignore[union-attr]
    assert list(gm.state_dict()) == ["cls.weight", "pos.weight"]
    assert torch.equal(gm.cls.weight, torch.zeros(1, 1, 8))  # init: zeros
    assert "cls_b = cls.expand(cls_b_size, -1, -1)" in gm.code
    with torch.no_grad():
        gm.cls.weight.normal_()
    x = torch.randn(3, 4, 8)
    y = run(gm, x)["y"]
    want = torch.cat([gm.cls.weight.expand(3, 1, 8), x], 1) + gm.pos.weight
    assert_close(y, want)
    grad = torch.randn(y.shape)
    y.backward(grad)
    assert_close(gm.cls.weight.grad, grad[:, :1].sum(0, keepdim=True))  # summed over the batch
    assert_close(gm.pos.weight.grad, grad.sum(0, keepdim=True))


def test_parameter_default_init_is_seeded_normal_and_exports_with_dynamic_batch() -> None:
    import archcomp

    a = archcomp.build(VIT_TOKENS, seed=3)
    b = archcomp.build(VIT_TOKENS, seed=3)
    assert torch.equal(a.pos.weight, b.pos.weight)
    assert 0.3 < a.pos.weight.std().item() < 2.0  # N(0, 1) over 40 draws, not a constant
    batch = torch.export.Dim("batch", max=64)
    x = torch.randn(3, 4, 8)
    exported = torch.export.export(a, (x,), dynamic_shapes=({0: batch},))
    assert_close(exported.module()(x[:2]), a(x[:2]))


def test_parameter_errors() -> None:
    text = spec(
        "x: [B, 4]", "- {id: p, op: parameter, shape: [4], in: x}\n- {id: n, op: add, in: [x, p]}"
    )
    assert errors_of(text) == ["op 'parameter' takes no input"]
    text = spec(
        "x: [B, 4]",
        "- {id: p, op: parameter, shape: [4], repeat: 2}\n- {id: n, op: add, in: [x, p]}",
    )
    assert errors_of(text) == [
        "cannot repeat op 'parameter': it has no input to chain the copies through"
    ]
    text = spec("x: [B, 4]", "- {id: p, op: parameter, shape: [4]}\n- {id: n, op: relu, in: x}")
    assert errors_of(text) == ["node is never used: no output depends on it"]
    messages = errors_of(
        spec("x: [B, 4]", "- {id: p, op: parameter, shape: [0]}\n- {id: n, op: add, in: [x, p]}")
    )
    assert len(messages) == 1 and "greater than 0" in messages[0]


# -- layer_scale -----------------------------------------------------------------------------


def test_layer_scale_shapes_params_macs_and_errors() -> None:
    assert out("x: [B, T, 8]", "op: layer_scale") == (B, T, 8)
    g = load_graph(spec("x: [B, 4, H, W]", "- {id: n, op: layer_scale, dim: 1}"))
    node = g.nodes["n"]
    assert node.args.num_features == 4
    assert node.op.param_shapes(node.args) == {"gamma": (4,)}
    assert macs(g, "n") == mul(mul(mul(B, H), W), 4)
    fails(
        "x: [B, T, 8]",
        "op: layer_scale, num_features: 6",
        "num_features is 6 but the input gives 8",
        "6}",
    )
    fails(
        "x: [B, T, 8]", "op: layer_scale, dim: 3", "dim=3 is out of range for a rank-3 tensor", "3}"
    )
    fails(
        "x: [B, T, C]",
        "op: layer_scale",
        "the channel dim (dim 2) must be a concrete size, found symbolic 'C'",
        "layer_scale}",
    )
    fails(
        "x: {shape: [B, 8], dtype: int64}",
        "op: layer_scale",
        "layer_scale needs a floating-point input, found int64",
        "layer_scale}",
    )


def layer_scale_reference(x: torch.Tensor, gamma: torch.Tensor, dim: int) -> torch.Tensor:
    """CaiT's diag(gamma) x, written out: ConvNeXt's ``layer_scale_parameter * features``
    channels last, ``gamma[:, None, None] * x`` channels first."""
    view = [1] * x.dim()
    view[dim] = gamma.numel()
    return gamma.view(view) * x


def check_against_reference(
    gm: torch.nn.Module, x: torch.Tensor, gamma: torch.Tensor, ref: Callable[..., torch.Tensor]
) -> None:
    """Forward and the gradients of x and gamma, compiled against ``ref`` (NUMERICS.md rule)."""
    with RoundingChains() as chains:
        y = run(gm, x)["y"]
        want = ref(x, gamma)
        proj = torch.randn_like(want)
        got = torch.autograd.grad((y * proj).sum(), (x, gm.n.gamma))
        wgrads = torch.autograd.grad((want * proj).sum(), (x, gamma))
    numerics.assert_close(y, want, chains.tolerance(torch.float32, y, want))
    for a, b in zip(got, wgrads, strict=True):
        numerics.assert_close(a, b, chains.tolerance(torch.float32))


@pytest.mark.parametrize(
    ("shape", "dim"), [((2, 5, 8), -1), ((2, 3, 5, 8), -1), ((2, 4, 3, 5), 1)], ids=str
)
def test_layer_scale_matches_the_reference_forward_and_backward(
    shape: tuple[int, ...], dim: int
) -> None:
    torch.manual_seed(0)
    dims = ", ".join(str(d) for d in shape)
    node = f"- {{id: n, op: layer_scale, dim: {dim}, init_value: 0.1}}"
    _, gm = compile_spec(spec(f"x: [{dims}]", node))
    assert_same(gm.n.gamma.detach(), torch.full((shape[dim],), 0.1))  # init_value, exactly
    with torch.no_grad():
        gm.n.gamma.uniform_(0.5, 1.5)  # distinct per channel: a wrong axis or order shows
    gamma = gm.n.gamma.detach().clone().requires_grad_()
    x = torch.randn(shape, requires_grad=True)
    check_against_reference(gm, x, gamma, lambda x, g: layer_scale_reference(x, g, dim))
    # planted bugs the check catches: the channels in the wrong order, the gain's mean
    for bug in (lambda g: g.flip(0), lambda g: g.mean().expand_as(g)):
        with pytest.raises(AssertionError):
            check_against_reference(
                gm, x, gamma, lambda x, g, bug=bug: layer_scale_reference(x, bug(g), dim)
            )


def test_layer_scale_defaults_and_node_init() -> None:
    """ConvNeXt's default 1e-6; DINOv2's layerscale_value 1.0 is init_value: 1.0; a node's
    init overrides the default; meta builds allocate nothing."""
    text = spec(
        "x: [B, T, 4]",
        """
        - {id: n, op: layer_scale}
        - {id: m, op: layer_scale, in: n, init_value: 1.0}
        - {id: k, op: layer_scale, in: m, init: {gamma: zeros}}
        """,
        "{y: k}",
    )
    model = archcomp.build(text, seed=0)
    assert_same(model.n.gamma.detach(), torch.full((4,), 1e-6))
    assert_same(model.m.gamma.detach(), torch.ones(4))
    assert_same(model.k.gamma.detach(), torch.zeros(4))
    assert archcomp.build(text, device="meta").n.gamma.is_meta
