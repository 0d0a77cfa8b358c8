"""The parameter op (archcomp/ops/parameter.py): a learned tensor (a ViT class token):
shapes, errors, seeded default init, export with a dynamic batch.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import pytest
import torch
from lowering import check_declared, compile_spec, errors_of, run, spec
from torch.testing import assert_close

from archcomp.ir.dims import Sym

(B,) = (Sym.symbol(n) for n in "B")


OPS = {"parameter": ("embedding", "Parameter")}


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
