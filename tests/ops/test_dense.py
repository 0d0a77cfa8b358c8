"""Dense layers (archcomp/ops/dense.py): linear and embedding. Shapes, inferred in_features,
located errors, parameters and MACs, and forward values and gradients against torch's
functional forms with the weights copied.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import math

import numerics
import pytest
import torch
import torch.nn.functional as F
from lowering import check_declared, compile_spec, fails, macs, out, run, spec
from numerics import RoundingChains, assert_same

from archcomp import load_graph
from archcomp.ir.dims import Sym, mul

B, S = (Sym.symbol(n) for n in "BS")

OPS = {"linear": ("linear", "Linear"), "embedding": ("embedding", "Embedding")}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def test_linear_shapes_params_and_macs() -> None:
    assert out("x: [B, S, 6]", "op: linear, out_features: 3") == (B, S, 3)
    g = load_graph(spec("x: [B, 6]", "- {id: n, op: linear, out_features: 3, bias: false}"))
    node = g.nodes["n"]
    assert node.args.in_features == 6
    assert node.op.param_shapes(node.args) == {"weight": (3, 6)}
    assert macs(g, "n") == mul(B, 18)
    fails(
        "x: [B, 6]",
        "op: linear, out_features: 3, in_features: 5",
        "in_features is 5 but the input gives 6",
        "5}",
    )


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_f_linear_forward_and_backward(bias: bool) -> None:
    torch.manual_seed(0)
    flag = str(bias).lower()
    _, gm = compile_spec(
        spec("x: [4, 5, 6]", f"- {{id: n, op: linear, out_features: 3, bias: {flag}}}")
    )
    w = gm.n.weight.detach().clone().requires_grad_()
    b = gm.n.bias.detach().clone().requires_grad_() if bias else None
    x = torch.randn(4, 5, 6, requires_grad=True)
    with RoundingChains() as chains:
        y = run(gm, x)["y"]
        want = F.linear(x, w, b)
        proj = torch.randn_like(want)
        got = torch.autograd.grad((y * proj).sum(), (x, *gm.n.parameters()))
        ref = torch.autograd.grad((want * proj).sum(), (x, w, *([b] if bias else [])))
    numerics.assert_close(y, want, chains.tolerance(torch.float32, y, want))
    for a, r in zip(got, ref, strict=True):
        numerics.assert_close(a, r, chains.tolerance(torch.float32))


def test_embedding_shapes_and_errors() -> None:
    assert out(
        "x: {shape: [B, S], dtype: int64}", "op: embedding, num_embeddings: 10, embedding_dim: 4"
    ) == (B, S, 4)
    g = load_graph(
        spec(
            "x: {shape: [B, S], dtype: int64}",
            "- {id: n, op: embedding, num_embeddings: 10, embedding_dim: 4}",
        )
    )
    assert g.nodes["n"].op.param_shapes(g.nodes["n"].args) == {"weight": (10, 4)}
    fails(
        "x: {shape: [B, S], dtype: int64}",
        "op: embedding, num_embeddings: 10, embedding_dim: 4, padding_idx: 10",
        "padding_idx 10 is outside [0, 10)",
        "10}",
    )


@pytest.mark.parametrize("scale", [False, True])
def test_embedding_is_a_row_lookup_with_gradients(scale: bool) -> None:
    torch.manual_seed(0)
    flag = str(scale).lower()
    node = f"- {{id: n, op: embedding, num_embeddings: 10, embedding_dim: 4, scale: {flag}}}"
    _, gm = compile_spec(spec("x: {shape: [2, 3], dtype: int64}", node))
    ids = torch.tensor([[1, 2, 1], [9, 0, 3]])
    w = gm.n.weight.detach().clone().requires_grad_()
    y = run(gm, ids)["y"]
    want = F.embedding(ids, w) * (math.sqrt(4) if scale else 1.0)
    assert_same(y, want)  # a lookup and one multiplication: no rounding differs
    proj = torch.randn_like(want)
    (got,) = torch.autograd.grad((y * proj).sum(), (gm.n.weight,))
    (ref,) = torch.autograd.grad((want * proj).sum(), (w,))
    assert_same(got, ref)
