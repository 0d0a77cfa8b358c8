"""Norms and dropout (archcomp/ops/norm.py): layer_norm, batch_norm, rms_norm, group_norm,
instance_norm, dropout. Shapes, parameters and buffers, errors, and forward and gradients
against torch.nn and transformers' LlamaRMSNorm.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import numerics
import pytest
import torch
import torch.nn.functional as F
from lowering import (
    check_declared,
    check_state,
    compile_for_test,
    compile_spec,
    fails,
    macs,
    out,
    projected_grads,
    run,
    spec,
)
from numerics import RoundingChains, Tolerance, assert_same
from torch import nn
from torch.testing import assert_close

from archcomp import load_graph
from archcomp.ir import TensorType
from archcomp.ir.dims import Sym, mul

B, S, T = (Sym.symbol(n) for n in "BST")


OPS = {
    "layer_norm": ("norm", "Layer Norm"),
    "batch_norm": ("norm", "Batch Norm"),
    "dropout": ("dropout", "Dropout"),
    "group_norm": ("norm", "Group Norm"),
    "instance_norm": ("norm", "Instance Norm"),
    "rms_norm": ("norm", "RMS Norm"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def _group_norm_ref(
    x: torch.Tensor, groups: int, w: torch.Tensor, b: torch.Tensor, eps: float
) -> torch.Tensor:
    """Group norm written out: mean and biased variance per (sample, group)."""
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    mean = g.mean(-1, keepdim=True)
    var = ((g - mean) ** 2).mean(-1, keepdim=True)
    y = ((g - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.dim() - 2)
    return y * w.reshape(shape) + b.reshape(shape)


def test_layer_norm() -> None:
    g = load_graph(spec("x: [B, S, 512]", "- {id: n, op: layer_norm}"))
    node = g.nodes["n"]
    assert g.output_types["y"] == TensorType((B, S, 512))
    assert node.args.normalized_shape == 512  # type: ignore[attr-defined]
    assert node.op.param_shapes(node.args) == {"weight": (512,), "bias": (512,)}
    assert macs(g, "n") == mul(mul(B, S), 512)
    g = load_graph(spec("x: [B, 8]", "- {id: n, op: layer_norm, bias: false}"))
    assert g.nodes["n"].op.param_shapes(g.nodes["n"].args) == {"weight": (8,)}
    fails(
        "x: [B, S]",
        "op: layer_norm",
        "the last dim (normalized_shape) must be a concrete size, found symbolic 'S'",
        "layer_norm",
    )
    fails(
        "x: [B, 8]",
        "op: layer_norm, eps: 0",
        "'eps': input should be greater than 0, found 0",
        "0}",
    )


def test_batch_norm() -> None:
    for x in ("[B, 16]", "[B, 16, L]", "[B, 16, H, W]"):
        g = load_graph(spec(f"x: {x}", "- {id: n, op: batch_norm}"))
        node = g.nodes["n"]
        assert node.args.num_features == 16  # type: ignore[attr-defined]
        assert node.op.param_shapes(node.args) == {"weight": (16,), "bias": (16,)}
        assert node.op.buffer_shapes(node.args) == {
            "running_mean": (16,),
            "running_var": (16,),
            "num_batches_tracked": (),
        }
    g = load_graph(
        spec("x: [B, 4]", "- {id: n, op: batch_norm, affine: false, track_running_stats: false}")
    )
    node = g.nodes["n"]
    assert node.op.param_shapes(node.args) == {} == node.op.buffer_shapes(node.args)
    fails(
        "x: [B, 3, 4, 5, 6]",
        "op: batch_norm",
        "batch_norm (B, C, ...) expects a rank-2 or 3 or 4 input, found [B, 3, 4, 5, 6]",
        "batch_norm",
    )
    fails(
        "x: [B, 4]",
        "op: batch_norm, momentum: 1.5",
        "'momentum': input should be less than or equal to 1, found 1.5",
        "1.5",
    )


def test_dropout() -> None:
    assert out("x: [B, 4]", "op: dropout") == (B, 4)
    assert out("x: [B, 4]", "op: dropout, p: 0") == (B, 4)
    fails("x: [B, 4]", "op: dropout, p: 1.0", "'p': input should be less than 1, found 1.0", "1.0")
    fails(
        "x: [B, 4]",
        "op: dropout, p: -0.1",
        "'p': input should be greater than or equal to 0, found -0.1",
        "-0.1",
    )


def test_lower_norms_and_dropout() -> None:
    text = spec(
        "x: [4, 6, 5, 5]\n  s: [4, 7, 10]",
        """
        - {id: bn2, op: batch_norm, in: x, eps: 0.001, momentum: 0.2}
        - {id: bn1, op: batch_norm, in: s, affine: false}
        - {id: ln, op: layer_norm, in: s, eps: 0.0001}
        - {id: ln0, op: layer_norm, in: s, elementwise_affine: false}
        - {id: drop, op: dropout, in: ln, p: 0.3}
        - {id: bnf, op: batch_norm, in: s, track_running_stats: false, momentum: null}
        """,
        "{bn2: bn2, bn1: bn1, drop: drop, ln0: ln0, bnf: bnf}",
    )
    _, gm = compile_spec(text)
    assert isinstance(gm.bn2, nn.BatchNorm2d) and isinstance(gm.bn1, nn.BatchNorm1d)
    assert isinstance(gm.drop, nn.Dropout) and gm.drop.p == 0.3
    assert gm.bn2.eps == 0.001 and gm.bn2.momentum == 0.2
    assert gm.bnf.momentum is None
    x, s = torch.randn(4, 6, 5, 5), torch.randn(4, 7, 10)
    with torch.no_grad():
        gm.ln.weight.uniform_()
        gm.ln.bias.uniform_()
    gm.eval()
    got = run(gm, x, s)
    # fresh running stats (mean 0, var 1) against the formula: the kernel's subtract, rsqrt,
    # scale and shift, and the formula's division: 5 roundings
    formula = Tolerance(torch.float32, 5)
    numerics.assert_close(got["bn2"], x / (1 + 0.001) ** 0.5, formula)
    numerics.assert_close(got["bn1"], s / (1 + 1e-5) ** 0.5, formula)
    ln = F.layer_norm(s, (10,), gm.ln.weight, gm.ln.bias, eps=1e-4)
    assert_same(got["drop"], ln)  # dropout is the identity in eval mode
    assert_same(got["ln0"], F.layer_norm(s, (10,)))
    assert_same(got["bnf"], F.batch_norm(s, None, None, training=True))
    gm.train()
    got = run(gm, x, s)
    assert_same(
        got["bn2"], F.batch_norm(x, None, None, gm.bn2.weight, gm.bn2.bias, True, eps=0.001)
    )
    assert gm.bn2.num_batches_tracked.item() == 1
    dropped = got["drop"]
    assert (dropped == 0).any() and not (dropped == 0).all()
    kept = dropped != 0
    # dropout multiplies by a rounded 1 / 0.7; the test divides: 2 roundings
    numerics.assert_close(dropped[kept], ln[kept] / 0.7, Tolerance(torch.float32, 2))


def test_group_norm_shapes_params_and_errors() -> None:
    g = load_graph(spec("x: [B, 12, S]", "- {id: n, op: group_norm, num_groups: 3}"))
    node = g.nodes["n"]
    assert node.args.num_channels == 12  # type: ignore[attr-defined]
    assert node.op.param_shapes(node.args) == {"weight": (12,), "bias": (12,)}
    assert {k: tuple(p.shape) for k, p in nn.GroupNorm(3, 12).named_parameters()} == {
        "weight": (12,),
        "bias": (12,),
    }
    assert macs(g, "n") == mul(mul(B, S), 12)
    g = load_graph(spec("x: [B, 4]", "- {id: n, op: group_norm, num_groups: 2, affine: false}"))
    assert g.nodes["n"].op.param_shapes(g.nodes["n"].args) == {}
    fails(
        "x: [B, 10, 4, 4]",
        "op: group_norm, num_groups: 4",
        "num_groups=4 does not divide the 10 channels",
        "4}",
    )
    fails(
        "x: [B, S, 4]",
        "op: group_norm, num_groups: 1",
        "the channel dim (dim 1) must be a concrete size, found symbolic 'S'",
        "group_norm",
    )
    fails("x: [B, 8]", "op: group_norm", "missing required argument 'num_groups'", "{id")


@pytest.mark.parametrize("shape", [(3, 8), (3, 8, 5), (3, 8, 4, 5)])
def test_group_norm_matches_the_formula(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)  # the weights and inputs below are drawn from torch's global generator
    dims = ", ".join(str(d) for d in shape)
    g = load_graph(spec(f"x: [{dims}]", "- {id: n, op: group_norm, num_groups: 4, eps: 0.001}"))
    gm = compile_for_test(g)
    check_state(g, gm)
    assert isinstance(gm.n, nn.GroupNorm)
    with torch.no_grad():
        gm.n.weight.normal_()
        gm.n.bias.normal_()
    x = torch.randn(shape, requires_grad=True)
    w = gm.n.weight.detach().clone().requires_grad_()
    b = gm.n.bias.detach().clone().requires_grad_()
    # the rule of tests/NUMERICS.md: the tolerance grows with the reductions on each side
    with RoundingChains() as chains:
        y = run(gm, x)["y"]
        want = _group_norm_ref(x, 4, w, b, 1e-3)
        proj = torch.randn_like(want)
        got = torch.autograd.grad((y * proj).sum(), (x, gm.n.weight, gm.n.bias))
        ref = torch.autograd.grad((want * proj).sum(), (x, w, b))
    numerics.assert_close(y, want, chains.tolerance(torch.float32, y, want))
    floor = numerics.rms(torch.cat([r.flatten() for r in ref]))  # NUMERICS.md: cancelling sums
    for a, r in zip(got, ref, strict=True):
        numerics.assert_close(a, r, chains.tolerance(torch.float32), floor=floor)


def test_instance_norm_shapes_params_and_errors() -> None:
    for x, cls in (("[B, 6, S]", nn.InstanceNorm1d), ("[B, 6, 4, 4]", nn.InstanceNorm2d)):
        g = load_graph(spec(f"x: {x}", "- {id: n, op: instance_norm}"))
        node = g.nodes["n"]
        assert node.args.num_features == 6  # type: ignore[attr-defined]
        assert node.op.param_shapes(node.args) == {} == node.op.buffer_shapes(node.args)
        m = cls(6, affine=True, track_running_stats=True)
        g = load_graph(
            spec(f"x: {x}", "- {id: n, op: instance_norm, affine: true, track_running_stats: true}")
        )
        node = g.nodes["n"]
        assert node.op.param_shapes(node.args) == {
            k: tuple(p.shape) for k, p in m.named_parameters()
        }
        assert node.op.buffer_shapes(node.args) == {k: tuple(b.shape) for k, b in m.named_buffers()}
    fails(
        "x: [B, 6]",
        "op: instance_norm",
        "instance_norm (B, C, ...) expects a rank-3 or 4 or 5 input, found [B, 6]",
        "instance_norm",
    )


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 5, 4, 3), (2, 3, 2, 3, 4)])
def test_instance_norm_matches_torch_in_train_and_eval(shape: tuple[int, ...]) -> None:
    dims = ", ".join(str(d) for d in shape)
    node = "- {id: n, op: instance_norm, affine: true, track_running_stats: true, momentum: 0.3}"
    g = load_graph(spec(f"x: [{dims}]", node))
    gm = compile_for_test(g)
    check_state(g, gm)
    ref = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}[len(shape)](
        shape[1], affine=True, track_running_stats=True, momentum=0.3
    )
    with torch.no_grad():
        gm.n.weight.normal_()
        gm.n.bias.normal_()
    ref.load_state_dict(gm.n.state_dict())
    x = torch.randn(shape, requires_grad=True)
    for mode in ("train", "eval"):
        gm.train(mode == "train")
        ref.train(mode == "train")
        y, want = run(gm, x)["y"], ref(x)
        assert_close(y, want, msg=mode)
        got, wgrad = projected_grads(y, want, (x,))
        assert_close(got[0], wgrad[0], msg=mode)
        assert_close(gm.n.running_mean, ref.running_mean, msg=mode)
        assert_close(gm.n.running_var, ref.running_var, msg=mode)
    # without running stats: per-instance statistics, written out
    g = load_graph(spec(f"x: [{dims}]", "- {id: n, op: instance_norm}"))
    gm = compile_for_test(g).eval()
    flat = x.reshape(*shape[:2], -1)
    mean = flat.mean(-1, keepdim=True)
    var = flat.var(-1, unbiased=False, keepdim=True)
    assert_close(run(gm, x)["y"], ((flat - mean) / torch.sqrt(var + 1e-5)).reshape(shape))


def test_rms_norm_shape_params_and_errors() -> None:
    g = load_graph(spec("x: [B, T, 64]", "- {id: n, op: rms_norm}"))
    node = g.nodes["n"]
    assert node.outputs["out"].shape == (B, T, 64)
    assert node.args.normalized_shape == 64 and node.args.eps == 1e-6
    assert node.op.param_shapes(node.args) == {"weight": (64,)}
    assert macs(g, "n") == Sym({("B", "T"): 64})
    g = load_graph(spec("x: [B, 8]", "- {id: n, op: rms_norm, elementwise_affine: false}"))
    assert g.nodes["n"].op.param_shapes(g.nodes["n"].args) == {}
    fails(
        "x: {shape: [B, 8], dtype: int64}",
        "op: rms_norm",
        "rms_norm needs a floating-point input, found int64",
        "rms_norm",
    )
    fails(
        "x: [B, 8]",
        "op: rms_norm, normalized_shape: 4",
        "normalized_shape is 4 but the input gives 8",
        "4",
    )


def test_rms_norm_matches_llama_rmsnorm_forward_and_backward() -> None:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    _, gm = compile_spec(spec("x: [B, T, 32]", "- {id: n, op: rms_norm, eps: 1.0e-5}"))
    assert isinstance(gm.n, nn.RMSNorm)
    ref = LlamaRMSNorm(32, eps=1e-5)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        gm.n.weight.copy_(ref.weight)
    x = torch.randn(3, 7, 32)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = run(gm, xa)["y"], ref(xb)
    assert_close(got, want)
    g = torch.randn(got.shape)
    got.backward(g)
    want.backward(g)
    assert_close(xa.grad, xb.grad)
    assert_close(gm.n.weight.grad, ref.weight.grad)


def _gemma_check(gm: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    """Compiled rms_norm against ``ref`` (weights already equal): forward, gradients of x and
    the weight, by the NUMERICS.md rule."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with RoundingChains() as chains:
        got, want = run(gm, xa)["y"], ref(xb)
        w = torch.randn_like(want)
        (got * w).sum().backward()
        (want * w).sum().backward()
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want))
    tol = chains.tolerance(torch.float32)
    numerics.assert_close(xa.grad, xb.grad, tol)
    numerics.assert_close(gm.n.weight.grad, ref.weight.grad, tol)


def test_rms_norm_offset_matches_transformers_gemma_rmsnorm() -> None:
    """offset: 1 is GemmaRMSNorm: (1 + w) * x_normed in float32, cast back after the gain;
    its weight starts at zero (a gain of one)."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    text = spec("x: [B, T, 32]", "- {id: n, op: rms_norm, offset: 1}")
    g, gm = compile_spec(text)
    assert g.nodes["n"].op.param_shapes(g.nodes["n"].args) == {"weight": (32,)}
    assert_same(gm.n.weight.detach(), torch.zeros(32))  # Gemma's init
    ref = GemmaRMSNorm(32, eps=1e-6)
    torch.manual_seed(0)
    with torch.no_grad():
        ref.weight.normal_(0, 0.5)
        gm.n.weight.copy_(ref.weight)
    x = torch.randn(3, 7, 32)
    _gemma_check(gm, ref, x)
    with torch.no_grad():  # a planted bug: the gain without its offset (Llama's w * x)
        gm.n.offset = 0.0
    with pytest.raises(AssertionError):
        _gemma_check(gm, ref, x)
    # bfloat16: the same kernels in the same order as Gemma's, so bitwise; Llama's order
    # (cast to bfloat16, then the gain) rounds differently
    bf = compile_for_test(load_graph(text), dtype=torch.bfloat16)
    ref_bf = GemmaRMSNorm(32).to(torch.bfloat16)
    with torch.no_grad():
        ref_bf.weight.copy_(ref.weight)
        bf.n.weight.copy_(ref.weight)
    xb = (x * 3).to(torch.bfloat16)
    got = run(bf, xb)["y"]
    assert got.dtype == torch.bfloat16
    assert_same(got, ref_bf(xb))
    h = xb.float() * torch.rsqrt(xb.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    assert not torch.equal(got, h.to(torch.bfloat16) * (1 + ref_bf.weight))


def test_rms_norm_offset_errors_and_default_init() -> None:
    fails(
        "x: [B, 8]",
        "op: rms_norm, elementwise_affine: false, offset: 1",
        "rms_norm's offset is added to its weight, but elementwise_affine is false",
        "1}",
    )
    _, gm = compile_spec(spec("x: [B, 8]", "- {id: n, op: rms_norm, offset: 0.5}"))
    assert_same(gm.n.weight.detach(), torch.full((8,), 0.5))  # a gain of 0.5 + 0.5 = 1
    x = torch.randn(2, 8)
    want = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    numerics.assert_close(run(gm, x)["y"], want, Tolerance(torch.float32, 8 + 4))
