"""Ops of today's architectures: rms_norm, rotary_embedding, grouped-query / sliding-window /
rotary multi_head_attention, grouped scaled_dot_product_attention, parameter, expand.

Shapes and located errors; declared parameters and buffers against the lowered modules; and
numerics, forward and gradients, against independent references: transformers' Llama, GPT-NeoX
and GPT-J functions, Meta's complex-number RoPE, and attention written out with explicit masks.
Float32 throughout, torch.testing's float32 tolerances (until tests/numerics.py lands).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from lowering import check_declared, run
from test_ops_tensor import compile_spec, fails, macs, out, spec
from torch import nn
from torch.testing import assert_close

from archcomp import SpecError, load_graph
from archcomp.ir.dims import Sym

B, T, S = (Sym.symbol(n) for n in "BTS")

OPS = {
    "rms_norm": ("norm", "RMS Norm"),
    "rotary_embedding": ("posenc", "RoPE"),
    "parameter": ("embedding", "Parameter"),
    "expand": ("shape", "Expand"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def errors_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_graph(text)
    return [d.message for d in info.value.diagnostics]


# -- rms_norm --------------------------------------------------------------------------------


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


# -- rotary_embedding --------------------------------------------------------------------------


def test_rotary_shape_buffers_and_errors() -> None:
    text = spec("x: [B, 4, T, 16]", "- {id: n, op: rotary_embedding, max_len: 64}")
    g, gm = compile_spec(text)  # check_state: declared buffers are the module's
    node = g.nodes["n"]
    assert node.outputs["out"].shape == (B, 4, T, 16) and node.args.head_dim == 16
    assert node.op.buffer_shapes(node.args) == {"cos": (64, 8), "sin": (64, 8)}
    assert list(gm.state_dict()) == []  # the tables are non-persistent
    g = load_graph(spec("x: [B, 4, T, 16]", "- {id: n, op: rotary_embedding, rotary_dim: 4}"))
    assert g.nodes["n"].op.buffer_shapes(g.nodes["n"].args) == {"cos": (4096, 2), "sin": (4096, 2)}
    fails(
        "x: [B, 4, T, 15]",
        "op: rotary_embedding",
        "the head dim 15 is odd: RoPE rotates pairs of dims",
        "rotary_embedding",
    )
    fails(
        "x: [B, 4, T, 16]",
        "op: rotary_embedding, rotary_dim: 18",
        "rotary_dim 18 must be even and at most the head dim 16",
        "18",
    )
    fails(
        "x: [B, 4, 100, 16]",
        "op: rotary_embedding, max_len: 64",
        "the sequence length 100 exceeds the rotary max_len 64",
        "64",
    )
    fails(
        "x: [16]",
        "op: rotary_embedding",
        "rotary_embedding needs [..., T, d] (heads before T), found [16]",
        "rotary_embedding",
    )
    fails(
        "x: [B, 4, T, 16]",
        "op: rotary_embedding, scaling: {type: llama3, low_freq_factor: 4.0,"
        " high_freq_factor: 1.0}",
        "scaling's high_freq_factor 1.0 must exceed its low_freq_factor 4.0",
        "{type: llama3",
    )
    text = spec("x: [B, 4, T, 16]", "- {id: n, op: rotary_embedding, scaling: {factor: 8.0}}")
    assert errors_of(text) == ["missing required argument 'type'"]


def _hf_rope(head_dim: int, rope_parameters: dict[str, Any], n: int) -> tuple[Any, Any]:
    """transformers' Llama cos/sin tables at positions 0..n-1 (1, n, head_dim)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        max_position_embeddings=256,
        rope_parameters=rope_parameters,
    )
    return LlamaRotaryEmbedding(cfg)(torch.zeros(1), torch.arange(n)[None])


LLAMA3 = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,  # short, so that all three bands occur at d = 64
}


@pytest.mark.parametrize(
    ("args", "rope_parameters"),
    [
        ("", {"rope_type": "default", "rope_theta": 10000.0}),
        (
            ", theta: 500000, scaling: {type: llama3, original_max_len: 32}",
            LLAMA3,
        ),
    ],
    ids=["default", "llama3-scaling"],
)
def test_rotary_rotate_half_matches_transformers_llama(args: str, rope_parameters: dict) -> None:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    _, gm = compile_spec(
        spec("q: [B, 4, T, 64]", f"- {{id: n, op: rotary_embedding, max_len: 256{args}}}")
    )
    cos, sin = _hf_rope(64, rope_parameters, 100)
    x = torch.randn(2, 4, 100, 64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = run(gm, xa)["y"]
    want, _ = apply_rotary_pos_emb(xb, xb, cos, sin)
    assert_close(got, want)
    g = torch.randn(got.shape)
    got.backward(g)
    want.backward(g)
    assert_close(xa.grad, xb.grad)


def test_llama3_scaling_changes_only_the_low_frequencies() -> None:
    from archcomp.nn.rotary import Llama3Scaling, inverse_frequencies

    plain = inverse_frequencies(64, 500000.0)
    scaled = inverse_frequencies(64, 500000.0, Llama3Scaling(8.0, 1.0, 4.0, 32))
    wavelen = 2 * math.pi / plain
    assert torch.equal(scaled[wavelen < 32 / 4], plain[wavelen < 32 / 4])  # high: kept
    assert_close(scaled[wavelen > 32], plain[wavelen > 32] / 8)  # low: slowed by factor
    medium = (wavelen >= 8) & (wavelen <= 32)
    assert medium.any()
    assert ((scaled[medium] < plain[medium]) & (scaled[medium] > plain[medium] / 8)).all()


def test_rotary_partial_matches_transformers_gpt_neox() -> None:
    from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

    _, gm = compile_spec(spec("q: [B, 3, T, 32]", "- {id: n, op: rotary_embedding, rotary_dim: 8}"))
    inv = 1.0 / (10000 ** (torch.arange(0, 8, 2, dtype=torch.float) / 8))
    freqs = torch.arange(9).float()[:, None] * inv
    emb = torch.cat((freqs, freqs), -1)[None]  # (1, T, 8)
    x = torch.randn(2, 3, 9, 32)
    want, _ = apply_rotary_pos_emb(x, x, emb.cos(), emb.sin())
    got = run(gm, x)["y"]
    assert_close(got, want)
    assert torch.equal(got[..., 8:], x[..., 8:])  # the unrotated dims pass through


def _meta_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Meta's original Llama RoPE on x (B, h, T, d): pairs (2i, 2i+1) as complex numbers times
    e^(i t theta^(-2i/d))."""
    d, n = x.shape[-1], x.shape[-2]
    freqs = 1.0 / (theta ** (torch.arange(0, d, 2)[: d // 2].float() / d))
    freqs_cis = torch.polar(torch.ones(n, d // 2), torch.outer(torch.arange(n).float(), freqs))
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs_cis).flatten(-2)


def test_rotary_interleaved_matches_meta_complex_and_gptj() -> None:
    from transformers.models.gptj.modeling_gptj import (
        apply_rotary_pos_emb,
        create_sinusoidal_positions,
    )

    _, gm = compile_spec(
        spec("q: [B, 4, T, 16]", "- {id: n, op: rotary_embedding, interleaved: true}")
    )
    x = torch.randn(2, 4, 11, 16)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = run(gm, xa)["y"]
    want = _meta_rope(xb, 10000.0)
    assert_close(got, want)
    g = torch.randn(got.shape)
    got.backward(g)
    want.backward(g)
    assert_close(xa.grad, xb.grad)
    # GPT-J: [B, T, h, d] layout, tables sin | cos
    sin, cos = torch.split(create_sinusoidal_positions(11, 16)[None], 8, dim=-1)
    gptj = apply_rotary_pos_emb(x.transpose(1, 2), sin, cos).transpose(1, 2)
    assert_close(got, gptj)


def test_rotary_layouts_differ_by_a_permutation_of_the_head_dims() -> None:
    """Interleaved RoPE on x is rotate-half RoPE on x with dims (0, 2, 4, ..., 1, 3, ...)
    gathered: the permutation a Meta checkpoint's q/k weights need for transformers."""
    from archcomp.nn.rotary import RotaryEmbedding

    half, inter = RotaryEmbedding(16), RotaryEmbedding(16, interleaved=True)
    x = torch.randn(2, 3, 9, 16)
    perm = torch.cat((torch.arange(0, 16, 2), torch.arange(1, 16, 2)))
    assert_close(half(x[..., perm]), inter(x)[..., perm])


def test_rotary_module_traces_compiles_and_checks_length() -> None:
    from archcomp.nn.rotary import RotaryEmbedding

    m = RotaryEmbedding(16, rotary_dim=8, max_len=32)
    x = torch.randn(2, 3, 20, 16)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager", dynamic=True)
    assert_close(compiled(x), m(x))
    assert_close(compiled(x[:, :, :7]), m(x[:, :, :7]))
    t = torch.export.Dim("t", max=32)
    exported = torch.export.export(m, (x,), dynamic_shapes=({2: t},))
    assert_close(exported.module()(x[:, :, :5]), m(x[:, :, :5]))
    with pytest.raises(RuntimeError, match="exceeds the rotary tables' max_len 32"):
        m(torch.randn(1, 1, 33, 16))


def test_rotary_tables_follow_dtype_and_rebuild_after_to_empty() -> None:
    from archcomp.nn.rotary import RotaryEmbedding

    m = RotaryEmbedding(8, max_len=16)
    assert m.to(torch.float64).cos.dtype == torch.float64
    meta = RotaryEmbedding(8, max_len=16, device="meta")
    real = meta.to_empty(device="cpu")
    real.reset_parameters()
    assert torch.equal(real.cos, RotaryEmbedding(8, max_len=16).cos)
    assert torch.equal(real.sin, RotaryEmbedding(8, max_len=16).sin)


# -- multi_head_attention: grouped-query, rope, sliding window ----------------------------------


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + mask) V written out, K/V heads repeated for their groups
    (transformers' repeat_kv); ``allowed`` (..., T, S) bool."""
    from transformers.models.llama.modeling_llama import repeat_kv

    groups = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


def window_allowed(n: int, window: int) -> torch.Tensor:
    """The banded causal pattern entry by entry: key j visible to query i iff 0 <= i - j < w."""
    return torch.tensor(
        [[0 <= i - j < (window or n + 1) for j in range(n)] for i in range(n)], dtype=torch.bool
    )


def mha_text(args: str, d: int = 32, seq: str = "T") -> str:
    return spec(
        f"x: [B, {seq}, {d}]\n  pad: {{shape: [B, {seq}], dtype: bool}}",
        "- {id: attn, op: multi_head_attention, in: {query: x, key_padding_mask: pad}, "
        f"{args}}}",
        "{y: attn}",
    )


def mha_reference(
    attn: nn.Module,
    x: torch.Tensor,
    pad: torch.Tensor,
    window: int,
    causal: bool,
    rope: dict[str, Any] | None,
) -> torch.Tensor:
    """The compiled op's weights through transformers' RoPE and the written-out attention."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    h, hkv = attn.num_heads, attn.num_kv_heads or attn.num_heads
    Bn, n, E = x.shape
    d = E // h
    q = attn.q_proj(x).view(Bn, n, h, d).transpose(1, 2)
    k = attn.k_proj(x).view(Bn, n, hkv, d).transpose(1, 2)
    v = attn.v_proj(x).view(Bn, n, hkv, d).transpose(1, 2)
    if rope is not None:
        q, k = apply_rotary_pos_emb(q, k, *_hf_rope(d, rope, n))
    allowed = window_allowed(n, window) if causal else torch.ones(n, n, dtype=torch.bool)
    allowed = allowed & ~pad[:, None, None, :]
    o = attention_reference(q, k, v, allowed)
    return attn.out_proj(o.transpose(1, 2).reshape(Bn, n, E))


@pytest.mark.parametrize(
    ("args", "window", "rope"),
    [
        ("num_heads: 8, num_kv_heads: 2", 0, None),
        ("num_heads: 8, num_kv_heads: 1, causal: true", 0, None),
        ("num_heads: 4, causal: true, window: 3", 3, None),
        (
            "num_heads: 8, num_kv_heads: 2, causal: true, bias: false, rope: {theta: 500000.0}",
            0,
            {"rope_type": "default", "rope_theta": 500000.0},
        ),
        (
            "num_heads: 8, num_kv_heads: 4, causal: true, window: 4, rope: {max_len: 64}",
            4,
            {"rope_type": "default", "rope_theta": 10000.0},
        ),
    ],
    ids=["gqa", "mqa-causal", "window", "gqa-rope", "gqa-window-rope"],
)
@pytest.mark.parametrize("padded", [False, True], ids=["no-pad", "pad"])
def test_mha_gqa_rope_window_match_reference(
    args: str, window: int, rope: dict | None, padded: bool
) -> None:
    _, gm = compile_spec(mha_text(args))  # check_state: k/v projections and rope buffers
    causal = "causal: true" in args
    torch.manual_seed(0)
    x = torch.randn(3, 10, 32)
    pad = torch.zeros(3, 10, dtype=torch.bool)
    if padded:
        pad[1, -2:] = True  # trailing padding; every query keeps a key in its window
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = run(gm, xa, pad)["y"]
    want = mha_reference(gm.attn, xb, pad, window, causal, rope)
    assert_close(got, want)
    got_grads = torch.autograd.grad((got * x).sum(), [xa, *gm.attn.parameters()])
    want_grads = torch.autograd.grad((want * x).sum(), [xb, *gm.attn.parameters()])
    for a, b in zip(got_grads, want_grads, strict=True):
        assert_close(a, b)


def test_mha_gqa_params_buffers_and_macs() -> None:
    text = spec(
        "x: [B, T, 4096]",
        "- {id: attn, op: multi_head_attention, num_heads: 32, num_kv_heads: 8, bias: false,"
        " causal: true, rope: {theta: 500000.0, max_len: 8192}}",
        "{y: attn}",
    )
    g = load_graph(text)
    n = g.nodes["attn"]
    assert n.op.param_shapes(n.args) == {
        "q_proj.weight": (4096, 4096),
        "k_proj.weight": (1024, 4096),
        "v_proj.weight": (1024, 4096),
        "out_proj.weight": (4096, 4096),
    }
    assert n.op.buffer_shapes(n.args) == {"rotary.cos": (8192, 64), "rotary.sin": (8192, 64)}
    bt = ("B", "T")
    assert macs(g, "attn") == Sym(
        {bt: 2 * 4096 * 4096 + 2 * 1024 * 4096, ("B", "T", "T"): 2 * 4096}
    )


def test_mha_sliding_window_sees_exactly_the_window() -> None:
    """Output i depends on inputs i - window + 1 .. i and on nothing else (gradients)."""
    _, gm = compile_spec(mha_text("num_heads: 2, causal: true, window: 3", d=8, seq=10))
    x = torch.randn(1, 10, 8, requires_grad=True)
    y = run(gm, x, torch.zeros(1, 10, dtype=torch.bool))["y"]
    for i in range(10):
        (grad,) = torch.autograd.grad(y[0, i].sum(), x, retain_graph=True)
        seen = [j for j in range(10) if grad[0, j].abs().sum() > 0]
        assert seen == list(range(max(0, i - 2), i + 1)), (i, seen)


def test_mha_new_arguments_errors() -> None:
    def at(args: str, token: str) -> tuple[str, int, int]:
        text = spec("x: [B, 12, 32]", f"- {{id: n, op: multi_head_attention, {args}}}")
        with pytest.raises(SpecError) as info:
            load_graph(text)
        (d,) = info.value.diagnostics
        assert d.loc is not None
        line = text.splitlines()[d.loc.line - 1]
        assert line.index(token) + 1 == d.loc.col, (line, d.loc.col)
        return d.message, d.loc.line, d.loc.col

    assert at("num_heads: 8, num_kv_heads: 3", "3")[0] == (
        "num_kv_heads 3 does not divide num_heads 8"
    )
    assert at("num_heads: 8, window: 4", "4")[0] == "a sliding window needs causal attention"
    assert at("num_heads: 8, causal: true, rope: {max_len: 8}", "{max_len")[0] == (
        "the query length 12 exceeds the rotary max_len 8"
    )
    assert at("num_heads: 4, rope: {rotary_dim: 10}", "{rotary_dim")[0] == (
        "rotary_dim 10 must be even and at most the head dim 8"
    )
    messages = errors_of(
        spec("x: [B, 12, 32]", "- {id: n, op: multi_head_attention, num_heads: 8, window: -1}")
    )
    assert len(messages) == 1 and "window" in messages[0]
    messages = errors_of(
        spec("x: [B, 12, 32]", "- {id: n, op: multi_head_attention, num_heads: 8, rope: {thta: 1}}")
    )
    assert len(messages) == 1 and "thta" in messages[0]


def test_mha_with_rope_gqa_window_compiles_fullgraph_exports_and_emits(tmp_path: Any) -> None:
    from equivalence import check_compile_export_emit

    _, gm = compile_spec(
        mha_text(
            "num_heads: 8, num_kv_heads: 2, causal: true, window: 4, "
            "rope: {theta: 500000.0, max_len: 64, rotary_dim: 2, scaling: {type: llama3}}"
        )
    )
    x, pad = torch.randn(2, 9, 32), torch.zeros(2, 9, dtype=torch.bool)
    check_compile_export_emit(gm, (x, pad), tmp_path)


# -- scaled_dot_product_attention with grouped key/value heads --------------------------------


def test_sdpa_grouped_heads_match_repeated_reference() -> None:
    text = spec(
        "q: [B, 8, T, 16]\n  k: [B, 2, T, 16]\n  v: [B, 2, T, 12]",
        "- {id: n, op: scaled_dot_product_attention, in: {query: q, key: k, value: v},"
        " causal: true}",
    )
    g, gm = compile_spec(text)
    assert g.output_types["y"].shape == (B, 8, T, 12)  # type: ignore[union-attr]
    assert "enable_gqa = True" in gm.code
    assert macs(g, "n") == Sym({("B", "T", "T"): 8 * (16 + 12)})
    q, k, v = torch.randn(2, 8, 6, 16), torch.randn(2, 2, 6, 16), torch.randn(2, 2, 6, 12)
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    refs = [t.clone().requires_grad_() for t in (q, k, v)]
    got = run(gm, *ins)["y"]
    want = attention_reference(*refs, window_allowed(6, 0))
    assert_close(got, want)
    grad = torch.randn(got.shape)
    got.backward(grad)
    want.backward(grad)
    for a, b in zip(ins, refs, strict=True):
        assert_close(a.grad, b.grad)
    # with dropout it lowers to the module, which must keep the grouping (eval: no dropout)
    _, gm = compile_spec(text.replace("causal: true", "causal: true, dropout: 0.1"))
    assert_close(run(gm.eval(), q, k, v)["y"], want.detach())


# -- parameter and expand ----------------------------------------------------------------------

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


def test_expand_shapes_and_errors() -> None:
    assert out("x: [B, 1, 8]", "op: expand, shape: [-1, 5, -1]") == (B, 5, 8)
    assert out("x: [1, 8]", "op: expand, shape: [3, 2, -1]") == (3, 2, 8)
    fails(
        "x: [B, 2, 8]",
        "op: expand, shape: [-1, 5, -1]",
        "cannot expand dim 1 of size 2 to 5: only size-1 dims expand",
        "[-1, 5",
    )
    fails(
        "x: [1, 8]",
        "op: expand, shape: [B, -1]",
        "'B' is not a dim without a like",
        "[B",
    )
    fails(
        "x: [1, 8]",
        "op: expand, shape: [-1, -1, -1]",
        "-1 at entry 0 would keep a dim the input does not have",
        "[-1",
    )
    fails(
        "x: [1, 1, 8]",
        "op: expand, shape: [-1, -1]",
        "shape has 2 entries for a rank-3 input [1, 1, 8]",
        "[-1",
    )
    text = spec(
        "x: [B, 4, 8]\n  c: [1, 1, 8]",
        "- {id: n, op: expand, in: {x: c, like: x}, shape: [S, -1, -1]}",
    )
    assert errors_of(text) == ["'S' is not a dim of the like input [B, 4, 8]"]


# -- docs/spec-format.md ---------------------------------------------------------------------


def test_spec_format_examples_of_modern_ops_check() -> None:
    """The Llama layer and the class-token snippets of docs/spec-format.md check as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "spec-format.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    llama = next(b for b in blocks if "input_layernorm" in b)
    g = load_graph(
        "archcomp: 1\nname: m\ninputs:\n  x: [B, T, 4096]\nnodes:\n"
        + "".join(f"  {line}\n" for line in llama.splitlines())
        + "outputs: {y: res_2}\n"
    )
    assert g.output_types["y"].shape == (B, T, 4096)  # type: ignore[union-attr]
    assert g.nodes["self_attn"].op.param_shapes(g.nodes["self_attn"].args)["k_proj.weight"] == (
        1024,
        4096,
    )
    vit = next(b for b in blocks if "class_token" in b)
    g = load_graph(
        "archcomp: 1\nname: m\nparams: {d_model: 8}\ninputs:\n  tokens: [B, 196, 8]\nnodes:\n"
        + "".join(f"  {line}\n" for line in vit.splitlines())
        + "outputs: {y: embedded}\n"
    )
    assert g.output_types["y"].shape == (B, 197, 8)  # type: ignore[union-attr]
