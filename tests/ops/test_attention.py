"""Attention (archcomp/ops/attention.py): multi_head_attention and
scaled_dot_product_attention. Shapes, located errors, declared parameters and MACs; forward
and gradients against torch.nn.MultiheadAttention and attention written out with explicit
masks (grouped-query, sliding-window, rotary); compile, export and emitted source.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import math
from typing import Any

import numerics
import pytest
import torch
from lowering import (
    MHA_SELF,
    additive,
    check_equivalent,
    compile_for_test,
    compile_spec,
    declared,
    error_of,
    errors_of,
    fails,
    hf_config,
    hf_names,
    hf_rope,
    macs,
    out,
    param_shapes,
    redraw,
    run,
    spec,
    spec_body,
    where_on,
)
from numerics import RoundingChains, assert_same
from torch import nn
from torch.testing import assert_close

from archcomp import SpecError, load_graph
from archcomp.ir import Ref, TensorType
from archcomp.ir.dims import Sym

B, T = (Sym.symbol(n) for n in "BT")


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
        q, k = apply_rotary_pos_emb(q, k, *hf_rope(d, rope, n))
    allowed = window_allowed(n, window) if causal else torch.ones(n, n, dtype=torch.bool)
    allowed = allowed & ~pad[:, None, None, :]
    o = attention_reference(q, k, v, allowed)
    return attn.out_proj(o.transpose(1, 2).reshape(Bn, n, E))


SDPA = spec_body(
    """
    inputs:
      q: [B, 8, T, 64]
      k: [B, 8, S, 64]
      v: [B, 8, S, 32]
    nodes:
      - {id: sdpa, op: scaled_dot_product_attention, in: {query: q, key: k, value: v}}
    outputs: sdpa
    """
)


def mha_pair(
    dim: int,
    h: int,
    kdim: int | None = None,
    vdim: int | None = None,
    bias: bool = True,
    causal: bool = False,
) -> tuple[nn.Module, nn.MultiheadAttention]:
    """Our module (through the op's lowering) and torch's, with the same weights."""
    key_dim, value_dim = kdim or dim, vdim or dim
    text = spec_body(
        f"""
        inputs:
          q: [B, T, {dim}]
          k: [B, S, {key_dim}]
          v: [B, S, {value_dim}]
          pad: {{shape: [B, S], dtype: bool}}
        nodes:
          - id: attn
            op: multi_head_attention
            num_heads: {h}
            bias: {str(bias).lower()}
            causal: {str(causal).lower()}
            in: {{query: q, key: k, value: v, key_padding_mask: pad}}
        outputs: attn
        """
    )
    gm = compile_for_test(load_graph(text))
    ours: nn.Module = gm.get_submodule("attn")
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(dim, h, bias=bias, batch_first=True, kdim=kdim, vdim=vdim)
    with torch.no_grad():
        if ref._qkv_same_embed_dim:
            wq, wk, wv = ref.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = ref.q_proj_weight, ref.k_proj_weight, ref.v_proj_weight
        ours.q_proj.weight.copy_(wq)
        ours.k_proj.weight.copy_(wk)
        ours.v_proj.weight.copy_(wv)
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        if bias:
            bq, bk, bv = ref.in_proj_bias.chunk(3)
            ours.q_proj.bias.copy_(bq)
            ours.k_proj.bias.copy_(bk)
            ours.v_proj.bias.copy_(bv)
            ours.out_proj.bias.copy_(ref.out_proj.bias)
    return ours, ref


def ref_grads(ref: nn.MultiheadAttention) -> dict[str, torch.Tensor]:
    """torch's gradients under our parameter names."""
    g: dict[str, torch.Tensor] = {}
    if ref._qkv_same_embed_dim:
        for name, w in zip(("q", "k", "v"), ref.in_proj_weight.grad.chunk(3), strict=True):
            g[f"{name}_proj.weight"] = w
    else:
        g["q_proj.weight"] = ref.q_proj_weight.grad
        g["k_proj.weight"] = ref.k_proj_weight.grad
        g["v_proj.weight"] = ref.v_proj_weight.grad
    g["out_proj.weight"] = ref.out_proj.weight.grad
    if ref.in_proj_bias is not None:
        for name, b in zip(("q", "k", "v"), ref.in_proj_bias.grad.chunk(3), strict=True):
            g[f"{name}_proj.bias"] = b
        g["out_proj.bias"] = ref.out_proj.bias.grad
    return g


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


def test_mha_self_attention_shape_and_inferred_args() -> None:
    g = load_graph(MHA_SELF)
    node = g.nodes["attn"]
    assert node.outputs == {"out": TensorType((B, T, 512))}
    assert (node.args.embed_dim, node.args.kdim, node.args.vdim) == (512, 512, 512)
    # self-attention: key and value default to query
    assert node.inputs["key"] == node.inputs["value"] == node.inputs["query"] == Ref("x")
    assert node.op.style.family == "attention" and node.op.style.label == "Multi-Head Attention"


def test_mha_cross_attention_value_defaults_to_key() -> None:
    g = load_graph(
        spec_body(
            """
            inputs:
              y: [B, T, 512]
              memory: [B, S, 256]
              pad: {shape: [B, S], dtype: bool}
            nodes:
              - {id: cross, op: multi_head_attention, num_heads: 8,
                 in: {query: y, key: memory, key_padding_mask: pad}}
            outputs: cross
            """
        )
    )
    node = g.nodes["cross"]
    assert node.inputs["value"] == Ref("memory")
    assert node.outputs["out"] == TensorType((B, T, 512))
    assert (node.args.kdim, node.args.vdim) == (256, 256)


def test_mha_label_depends_on_causal() -> None:
    from archcomp.ops.attention import MultiHeadAttentionArgs, multi_head_attention_label

    assert multi_head_attention_label(MultiHeadAttentionArgs(num_heads=8)) == "Multi-Head Attention"
    masked = MultiHeadAttentionArgs(num_heads=8, causal=True)
    assert multi_head_attention_label(masked) == "Masked Multi-Head Attention"
    gqa = MultiHeadAttentionArgs(num_heads=8, num_kv_heads=2, causal=True)
    assert multi_head_attention_label(gqa) == "Masked Grouped-Query Attention"
    mqa = MultiHeadAttentionArgs(num_heads=8, num_kv_heads=1)
    assert multi_head_attention_label(mqa) == "Multi-Query Attention"
    window = MultiHeadAttentionArgs(num_heads=8, num_kv_heads=2, causal=True, window=16)
    assert multi_head_attention_label(window) == "Sliding-Window Attention"


def test_mha_heads_must_divide_embed_dim() -> None:
    text = MHA_SELF.replace("num_heads: 8", "num_heads: 3")
    msg, line, col = error_of(text)
    assert msg == "embed_dim 512 is not divisible by num_heads 3"
    assert (line, col) == where_on(text, "num_heads", "3")


def test_mha_explicit_embed_dim_must_agree() -> None:
    text = MHA_SELF.replace("num_heads: 8", "num_heads: 8, embed_dim: 256")
    msg, line, col = error_of(text)
    assert msg == "embed_dim is 256 but the input gives 512"
    assert (line, col) == where_on(text, "embed_dim", "256")


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (
            "{shape: [B, S], dtype: float32}",
            "key_padding_mask must be bool (True = ignore that key), found float32",
        ),
        ("{shape: [B, T], dtype: bool}", "key_padding_mask must be [B, S] = [B, S], found [B, T]"),
    ],
)
def test_mha_key_padding_mask_errors(mask: str, message: str) -> None:
    text = spec_body(
        f"""
        inputs:
          y: [B, T, 64]
          memory: [B, S, 64]
          pad: {mask}
        nodes:
          - id: cross
            op: multi_head_attention
            num_heads: 4
            in: {{query: y, key: memory, key_padding_mask: pad}}
        outputs: cross
        """
    )
    msg, line, col = error_of(text)
    assert msg == message
    assert (line, col) == where_on(text, "key_padding_mask: pad", "pad}")


def test_mha_batch_and_rank_errors() -> None:
    text = spec_body(
        """
        inputs:
          y: [B, T, 64]
          memory: [2, S, 64]
        nodes:
          - {id: cross, op: multi_head_attention, num_heads: 4, in: {query: y, key: memory}}
        outputs: cross
        """
    )
    msg, line, col = error_of(text)
    assert msg == "key batch 2 differs from query batch B"
    assert (line, col) == where_on(text, "key: memory", "memory}")

    text = spec_body(
        """
        inputs:
          x: [T, 64]
        nodes:
          - {id: attn, op: multi_head_attention, num_heads: 4}
        outputs: attn
        """
    )
    msg, _, _ = error_of(text)
    assert msg == "query must be [B, T, E] (batch first), found [T, 64]"


def test_mha_rejects_bad_num_heads_and_dropout() -> None:
    text = MHA_SELF.replace("num_heads: 8", "num_heads: 0")
    msg, line, col = error_of(text)
    assert msg == "'num_heads': input should be greater than 0, found 0"
    assert (line, col) == where_on(text, "num_heads", "0")
    msg, _, _ = error_of(MHA_SELF.replace("num_heads: 8", "num_heads: 8, dropout: 1.5"))
    assert msg == "'dropout': input should be less than 1, found 1.5"
    text = MHA_SELF.replace("num_heads: 8", "num_heads: 8, nhead: 8")
    msg, line, col = error_of(text)
    assert msg == "unknown argument 'nhead' for op 'multi_head_attention'"
    assert (line, col) == where_on(text, "nhead", "nhead")


def test_mha_macs() -> None:
    g = load_graph(MHA_SELF)
    n = g.nodes["attn"]
    assert n.op.macs is not None
    ins = {p: g.type_of(r) for p, r in n.inputs.items()}
    macs = n.op.macs(n.args, ins, n.outputs)
    # 4 projections of B*T rows x 512x512, plus Q K^T and A V: 2 * B*T*T*512
    assert macs == Sym({("B", "T"): 4 * 512 * 512, ("B", "T", "T"): 2 * 512})


def test_sdpa_shape_and_macs() -> None:
    g = load_graph(SDPA)
    n = g.nodes["sdpa"]
    assert n.outputs["out"] == TensorType((B, 8, T, 32))
    assert n.op.style.label == "Scaled Dot-Product Attention"
    assert n.op.macs is not None
    ins = {p: g.type_of(r) for p, r in n.inputs.items()}
    assert n.op.macs(n.args, ins, n.outputs) == Sym({("B", "S", "T"): 8 * (64 + 32)})


def test_sdpa_errors() -> None:
    text = SDPA.replace("k: [B, 8, S, 64]", "k: [B, 8, S, 48]")
    msg, line, col = error_of(text)
    assert msg == "key dim 48 differs from query dim 64"
    assert (line, col) == where_on(text, "key: k", "k,")
    text = SDPA.replace("v: [B, 8, S, 32]", "v: [B, 8, T, 32]")
    assert error_of(text)[0] == "value length T differs from key length S"
    text = SDPA.replace("k: [B, 8, S, 64]", "k: [B, 3, S, 64]")  # 3 does not divide 8
    assert error_of(text)[0] == "key leading dims [B, 3] differ from query's [B, 8]"
    text = SDPA.replace("k: [B, 8, S, 64]", "k: [B, 4, S, 64]")  # grouped key, ungrouped value
    assert error_of(text)[0] == "value leading dims [B, 8] differ from key's [B, 4]"


def test_sdpa_numerics() -> None:
    for causal, scale in [(False, None), (True, 0.25)]:
        text = SDPA.replace("value: v}", f"value: v}}, causal: {str(causal).lower()}")
        if scale is not None:
            text = text.replace("causal:", f"scale: {scale}, causal:")
        text = text.replace("S,", "T,")  # causal self-attention shapes
        gm = compile_for_test(load_graph(text))
        torch.manual_seed(0)
        q, k, v = torch.randn(2, 8, 5, 64), torch.randn(2, 8, 5, 64), torch.randn(2, 8, 5, 32)
        with RoundingChains() as chains:  # the fused kernel against softmax(QK^T s) V by hand
            got = run(gm, q, k, v)["sdpa"]
            scores = q @ k.transpose(-2, -1) * (scale or 1 / math.sqrt(64))
            if causal:
                scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), -math.inf)
            want = scores.softmax(-1) @ v
        numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want))


def test_sdpa_dropout_only_in_training() -> None:
    gm = compile_for_test(load_graph(SDPA.replace("value: v}", "value: v}, dropout: 0.5")))
    q, k, v = torch.randn(2, 8, 5, 64), torch.randn(2, 8, 7, 64), torch.randn(2, 8, 7, 32)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert_same(run(gm.eval(), q, k, v)["sdpa"], ref)
    assert not torch.allclose(run(gm.train(), q, k, v)["sdpa"], ref)


@pytest.mark.parametrize("masked", [False, True], ids=["no-pad", "pad"])
@pytest.mark.parametrize(
    "config",
    [
        {"dim": 32, "h": 4},
        {"dim": 32, "h": 4, "causal": True},
        {"dim": 32, "h": 2, "bias": False},
        {"dim": 24, "h": 3, "kdim": 16, "vdim": 12},
    ],
    ids=["self", "causal", "no-bias", "kdim-vdim"],
)
def test_mha_matches_torch_forward_and_backward(
    config: dict[str, Any], masked: bool, torch_threads: int
) -> None:
    ours, ref = mha_pair(**config)
    E, causal = config["dim"], config.get("causal", False)
    Tn, Sn = 5, (5 if causal else 7)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(3, Tn, E, generator=gen)
    k = q if causal else torch.randn(3, Sn, config.get("kdim") or E, generator=gen)
    v = q if causal else torch.randn(3, Sn, config.get("vdim") or E, generator=gen)
    pad = torch.zeros(3, Sn, dtype=torch.bool)
    pad[1, -2:] = True  # trailing padding; every query keeps at least key 0
    pad[2, -4:] = True
    mask = pad if masked else None
    attn_mask = torch.ones(Tn, Sn, dtype=torch.bool).triu(1) if causal else None

    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    with RoundingChains() as chains:
        out = ours(*inputs, key_padding_mask=mask) if masked else ours(*inputs)
        expected, _ = ref(*ref_inputs, key_padding_mask=mask, attn_mask=attn_mask)
        forward = chains.tolerance(out.dtype, out, expected)
        grad = torch.randn(out.shape, generator=gen)
        out.backward(grad)
        expected.backward(grad)
    numerics.assert_close(out, expected, forward)
    backward = chains.tolerance(out.dtype)
    for mine, theirs in zip(inputs, ref_inputs, strict=True):
        assert mine.grad is not None and theirs.grad is not None
        numerics.assert_close(mine.grad, theirs.grad, backward)
    want = ref_grads(ref)
    got = {n: p.grad for n, p in ours.named_parameters()}
    assert set(got) == set(want)
    # the key bias's gradient is zero in exact arithmetic (softmax ignores a shift): measure
    # gradients against the layer's gradient scale (tests/NUMERICS.md)
    floor = numerics.rms(torch.cat([g.flatten() for g in want.values()]))
    for name in want:
        numerics.assert_close(got[name], want[name], backward, floor=floor, msg=name)


def test_mha_dropout_only_in_training() -> None:
    from archcomp.nn.attention import MultiHeadAttention

    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, dropout=0.5)
    plain = MultiHeadAttention(16, 4)
    plain.load_state_dict(m.state_dict())
    x = torch.randn(2, 6, 16)
    assert_same(m.eval()(x, x, x), plain(x, x, x))
    assert not torch.allclose(m.train()(x, x, x), plain(x, x, x))


def test_mha_state_dict_names_and_declared_params() -> None:
    for config in ["num_heads: 4", "num_heads: 3, bias: false"]:
        text = spec_body(
            f"""
            inputs:
              y: [B, T, 24]
              memory: [B, S, 10]
              val: [B, S, 6]
            nodes:
              - {{id: attn, op: multi_head_attention, {config},
                 in: {{query: y, key: memory, value: val}}}}
            outputs: attn
            """
        )
        g = load_graph(text)
        gm = compile_for_test(g)
        assert param_shapes(gm.get_submodule("attn")) == declared(g, "attn")
    assert list(gm.state_dict()) == [
        "attn.q_proj.weight",
        "attn.k_proj.weight",
        "attn.v_proj.weight",
        "attn.out_proj.weight",
    ]


@pytest.mark.parametrize(
    ("causal", "masked"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_mha_compiles_fullgraph_and_exports(causal: bool, masked: bool) -> None:
    from archcomp.nn.attention import MultiHeadAttention

    torch.manual_seed(0)
    m = MultiHeadAttention(32, 4, causal=causal).eval()
    x = torch.randn(2, 6, 32)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, -2:] = True
    kwargs = {"key_padding_mask": pad} if masked else {}
    with RoundingChains() as chains:
        eager = m(x, x, x, **kwargs)
    tol = chains.tolerance(eager.dtype, eager)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    numerics.assert_close(compiled(x, x, x, **kwargs), eager, tol, msg="torch.compile")
    exported = torch.export.export(m, (x, x, x), kwargs)
    numerics.assert_close(exported.module()(x, x, x, **kwargs), eager, tol, msg="torch.export")


def test_mha_builds_on_meta_without_allocating() -> None:
    text = MHA_SELF.replace("512", "12288").replace("num_heads: 8", "num_heads: 96")
    gm = compile_for_test(load_graph(text), device="meta")
    params = list(gm.parameters())
    assert params and all(p.is_meta for p in params)
    assert sum(p.numel() for p in params) == 4 * (12288 * 12288 + 12288)


# -- today's attention variants against transformers' modules -----------------------------------


ROPE = {"rope_type": "default", "rope_theta": 10000.0}
DECODER = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2}


def decoder_case(name: str, args: str, window: int = 0, **cfg: Any) -> tuple[str, Any, Any]:
    """A causal self-attention with RoPE of transformers' ``name`` family (Qwen2, Qwen3, OLMo-2,
    Gemma 2), its spec (``args``) and the reference forward."""
    import importlib

    mod = importlib.import_module(f"transformers.models.{name.lower()}.modeling_{name.lower()}")
    config = hf_config(
        name,
        **DECODER,
        rope_parameters=ROPE,
        max_position_embeddings=64,
        num_hidden_layers=1,
        **cfg,
    )
    hf = getattr(mod, f"{name}Attention")(config, layer_idx=0)
    rotary = getattr(mod, f"{name}RotaryEmbedding")(config)

    def forward(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        cos_sin = rotary(x, torch.arange(n)[None])
        return hf(
            x, position_embeddings=cos_sin, attention_mask=additive(window_allowed(n, window))
        )[0]

    text = spec(
        "x: [B, T, 32]",
        f"- {{id: attn, op: multi_head_attention, num_heads: 4, num_kv_heads: 2, causal: true, "
        f"rope: {{max_len: 64}}, {args}}}",
        "{y: attn}",
    )
    return text, hf, forward


GEMMA2 = {
    "head_dim": 16,
    "query_pre_attn_scalar": 20,
    "attn_logit_softcapping": 2.0,
    "attention_bias": False,
}
DECODERS = {
    # Qwen2: q, k, v biased, o not
    "qwen2": ("Qwen2", "bias: {out: false}", 0, {}),
    # Qwen3: head_dim apart from E / h, RMS norm of each q and k head
    "qwen3": (
        "Qwen3",
        "head_dim: 12, bias: false, qk_norm: {kind: rms, eps: 1.0e-6}",
        0,
        {"head_dim": 12, "rms_norm_eps": 1e-6, "attention_bias": False},
    ),
    # OLMo-2: RMS norm over the whole q and k projections
    "olmo2": (
        "Olmo2",
        "bias: false, qk_norm: {per_head: false, eps: 1.0e-6}",
        0,
        {"rms_norm_eps": 1e-6, "attention_bias": False},
    ),
    # Gemma 2: scale from query_pre_attn_scalar, soft-capped scores; global and sliding layers
    "gemma2": (
        "Gemma2",
        f"head_dim: 16, bias: false, scale: {20**-0.5!r}, softcap: 2.0",
        0,
        {**GEMMA2, "layer_types": ["full_attention"]},
    ),
    "gemma2-sliding": (
        "Gemma2",
        f"head_dim: 16, bias: false, scale: {20**-0.5!r}, softcap: 2.0, window: 4",
        4,
        {**GEMMA2, "sliding_window": 4, "layer_types": ["sliding_attention"]},
    ),
}


@pytest.mark.parametrize("case", sorted(DECODERS))
def test_mha_matches_transformers_decoder_attention(case: str) -> None:
    name, args, window, cfg = DECODERS[case]
    text, hf, forward = decoder_case(name, args, window, **cfg)
    _, gm = compile_spec(text)
    redraw(hf, seed=1)
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(2))
    check_equivalent(gm, forward, (x,), hf_names(gm, hf, {"out_proj": "o_proj"}))


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_mha_matches_whisper_attention_with_an_unbiased_key(cross: bool) -> None:
    from transformers.models.whisper.modeling_whisper import WhisperAttention

    config = hf_config("Whisper", d_model=32, encoder_attention_heads=4)
    hf = WhisperAttention(32, 4, bias=True, config=config)
    ins = "x: [B, T, 32]\n  m: [B, S, 32]" if cross else "x: [B, T, 32]"
    ports = "in: {query: x, key: m}, " if cross else "in: {query: x}, "
    text = spec(
        ins, f"- {{id: attn, op: multi_head_attention, num_heads: 4, {ports}bias: {{k: false}}}}"
    )
    _, gm = compile_spec(text.replace("{y: n}", "{y: attn}"))
    redraw(hf, seed=3)
    gen = torch.Generator().manual_seed(4)
    x, m = torch.randn(2, 6, 32, generator=gen), torch.randn(2, 9, 32, generator=gen)

    def forward(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return hf(x, key_value_states=m if cross else None)[0]

    run_inputs = (x, m) if cross else (x,)
    ref = forward if cross else (lambda x: forward(x, m))
    check_equivalent(gm, ref, run_inputs, hf_names(gm, hf, {}))


@pytest.mark.parametrize(
    ("case", "old", "new"),
    [
        ("gemma2", f"scale: {20**-0.5!r}, ", ""),  # 1/sqrt(head_dim), not query_pre_attn_scalar
        ("gemma2", "softcap: 2.0", "softcap: 20.0"),  # a cap that barely bites
        ("gemma2-sliding", "window: 4", "window: 5"),
        ("olmo2", "eps: 1.0e-6", "eps: 0.1"),
        ("qwen3", "rope: {max_len: 64}", "rope: {max_len: 64, theta: 20000.0}"),
    ],
)
def test_transformers_equivalence_catches_planted_bugs(case: str, old: str, new: str) -> None:
    name, args, window, cfg = DECODERS[case]
    text, hf, forward = decoder_case(name, args, window, **cfg)
    assert old in text
    _, gm = compile_spec(text.replace(old, new))
    redraw(hf, seed=1)
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(2))
    with pytest.raises(AssertionError, match="output"):
        check_equivalent(gm, forward, (x,), hf_names(gm, hf, {"out_proj": "o_proj"}))


# -- mask and score_bias inputs, window and softcap of scaled_dot_product_attention -------------


def sdpa_text(ports: dict[str, str], args: str = "") -> str:
    decls = "".join(f"\n  {p}: {t}" for p, t in ports.items())
    ins = "".join(f", {p}: {p}" for p in ports)
    return spec(
        f"q: [B, 4, T, 16]\n  k: [B, 2, T, 16]\n  v: [B, 2, T, 8]{decls}",
        "- {id: n, op: scaled_dot_product_attention, "
        f"in: {{query: q, key: k, value: v{ins}}}{args}}}",
    )


def written_out(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keep: torch.Tensor | None,
    added: torch.Tensor | None,
    softcap: float | None = None,
) -> torch.Tensor:
    """softmax(cap(Q K^T / sqrt(d)) + added, -inf where not keep) V, K/V heads repeated."""
    from transformers.models.llama.modeling_llama import repeat_kv

    groups = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if added is not None:
        scores = scores + added
    if keep is not None:
        scores = scores.masked_fill(~keep, -math.inf)
    return scores.softmax(-1) @ v


SDPA_CASES = {
    # port types, extra args, whether it lowers to one F.scaled_dot_product_attention call
    "bool-mask": ({"mask": "{shape: [B, 1, T, T], dtype: bool}"}, "", True),
    "float-mask": ({"mask": "[T, T]"}, "", True),
    "score-bias": ({"score_bias": "[4, T, T]"}, "", True),
    "bias-and-bool-mask": (
        {"mask": "{shape: [B, 1, T, T], dtype: bool}", "score_bias": "[1, 4, T, T]"},
        "",
        False,
    ),
    "causal-bias": ({"score_bias": "[B, 4, T, T]"}, ", causal: true", False),
    "window-softcap": (
        {"score_bias": "[4, T, T]"},
        ", causal: true, window: 3, softcap: 1.5",
        False,
    ),
}


@pytest.mark.parametrize("case", sorted(SDPA_CASES))
def test_sdpa_mask_bias_window_softcap_match_reference(case: str) -> None:
    ports, args, plain = SDPA_CASES[case]
    _, gm = compile_spec(sdpa_text(ports, args))
    assert ("scaled_dot_product_attention(" in gm.code) is plain  # else the module
    gen = torch.Generator().manual_seed(5)
    n = 6
    q, k, v = (torch.randn(2, h, n, d, generator=gen) for h, d in ((4, 16), (2, 16), (2, 8)))
    keep = torch.rand(2, 1, n, n, generator=gen) > 0.3
    keep |= torch.eye(n, dtype=torch.bool)  # every query keeps a key
    extra = {}
    if "mask" in ports:
        float_mask = ports["mask"] == "[T, T]"
        extra["mask"] = torch.randn(n, n, generator=gen) if float_mask else keep
    if "score_bias" in ports:
        shape = {"[4, T, T]": (4, n, n), "[1, 4, T, T]": (1, 4, n, n)}.get(ports["score_bias"])
        extra["score_bias"] = torch.randn(*(shape or (2, 4, n, n)), generator=gen)
    allowed = keep if "mask" in ports and extra["mask"].dtype == torch.bool else None
    window = 3 if "window" in args else (n + 1 if "causal" in args else 0)
    if window:
        band = window_allowed(n, window)
        allowed = band if allowed is None else allowed & band
    added = extra.get("score_bias")
    if "mask" in ports and extra["mask"].dtype != torch.bool:
        added = extra["mask"]
    softcap = 1.5 if "softcap" in args else None

    def reference(*xs: torch.Tensor) -> torch.Tensor:
        return written_out(*xs[:3], allowed, added, softcap)

    inputs = (q, k, v, *extra.values())
    ins = [t.clone().requires_grad_() for t in inputs[:3]]
    refs = [t.clone().requires_grad_() for t in inputs[:3]]
    with RoundingChains() as chains:
        got = run(gm, *ins, *inputs[3:])["y"]
        want = reference(*refs)
        out_tol = chains.tolerance(torch.float32, got, want)
        grad = torch.randn(got.shape, generator=gen)
        got.backward(grad)
        want.backward(grad)
    numerics.assert_close(got, want, out_tol)
    for a, b in zip(ins, refs, strict=True):
        numerics.assert_close(a.grad, b.grad, chains.tolerance(torch.float32))
    if plain:  # the lowering is torch's call with the mask as attn_mask: bitwise
        mask = next(iter(extra.values()))
        assert_same(
            got,
            torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, enable_gqa=True
            ),
        )


def test_sdpa_input_errors() -> None:
    q = "q: [B, 4, T, 16]\n  k: [B, 4, S, 16]\n  v: [B, 4, S, 8]"
    node = "op: scaled_dot_product_attention, in: {query: q, key: k, value: v, "
    fails(
        f"{q}\n  b: [4, S, T]",
        f"{node}score_bias: b}}",
        "score_bias [4, S, T] does not broadcast to the scores [..., T, S] = [B, 4, T, S]",
        "b}",
    )
    fails(
        f"{q}\n  m: {{shape: [T, S], dtype: int64}}",
        f"{node}mask: m}}",
        "mask must be bool (True = take part) or float32 like the query (added to the "
        "scores), found int64",
        "m}",
    )
    fails(
        f"{q}\n  m: {{shape: [T, S], dtype: bool}}",
        f"{node}score_bias: m}}",
        "score_bias must be float32 like the query (added to the scores), found bool",
        "m}",
    )
    fails(q, f"{node[:-2]}}}, window: 2", "a sliding window needs causal attention", "2")


# -- multi_head_attention's new arguments: parameters, MACs, masks, label, errors ---------------


def test_mha_head_dims_bias_mapping_and_qk_norm_params_and_macs() -> None:
    text = spec(
        "x: [B, T, 30]",
        "- {id: attn, op: multi_head_attention, num_heads: 4, num_kv_heads: 2, head_dim: 6,"
        " v_head_dim: 5, bias: {q: true, k: false, v: true, out: false},"
        " qk_norm: {kind: layer, per_head: false}}",
        "{y: attn}",
    )
    g, gm = compile_spec(text)  # check_state: declared parameters = the module's
    n = g.nodes["attn"]
    assert n.op.param_shapes(n.args) == {
        "q_proj.weight": (24, 30),
        "q_proj.bias": (24,),
        "k_proj.weight": (12, 30),
        "v_proj.weight": (10, 30),
        "v_proj.bias": (10,),
        "out_proj.weight": (30, 20),
        "q_norm.weight": (24,),
        "q_norm.bias": (24,),
        "k_norm.weight": (12,),
        "k_norm.bias": (12,),
    }
    assert g.output_types["y"].shape == (B, T, 30)  # type: ignore[union-attr]
    # projections 30*24 + 30*12 + 30*10 + 20*30 per token, norms 24 + 12, then B T T h (6 + 5)
    per_token = 30 * 24 + 30 * 12 + 30 * 10 + 20 * 30 + 24 + 12
    assert macs(g, "attn") == Sym({("B", "T"): per_token, ("B", "T", "T"): 4 * 11})
    x = torch.randn(2, 5, 30)
    assert run(gm, x)["y"].shape == (2, 5, 30)
    # softcap's written-out path counts the same two matmuls
    assert macs(load_graph(text.replace("head_dim: 6,", "head_dim: 6, softcap: 5.0,")), "attn") == (
        macs(g, "attn")
    )


def test_mha_existing_specs_keep_their_parameters() -> None:
    """bias: true/false as before: the same four projections, keys and shapes."""
    for bias in ("true", "false"):
        g = load_graph(MHA_SELF.replace("num_heads: 8", f"num_heads: 8, bias: {bias}"))
        n = g.nodes["attn"]
        names = [f"{p}_proj.{w}" for p in ("q", "k", "v", "out") for w in ("weight", "bias")]
        want = {k: (512, 512) if k.endswith("weight") else (512,) for k in names}
        if bias == "false":
            want = {k: v for k, v in want.items() if k.endswith("weight")}
        assert n.op.param_shapes(n.args) == want


def test_mha_mask_and_score_bias_match_written_out_attention() -> None:
    text = spec(
        "x: [B, T, 32]\n  m: {shape: [B, 1, T, T], dtype: bool}\n  b: [4, T, T]",
        "- {id: attn, op: multi_head_attention, num_heads: 4, num_kv_heads: 2, causal: true,"
        " in: {query: x, mask: m, score_bias: b}}",
        "{y: attn}",
    )
    _, gm = compile_spec(text)
    attn = gm.attn
    gen = torch.Generator().manual_seed(6)
    n = 7
    x = torch.randn(2, n, 32, generator=gen)
    keep = (torch.rand(2, 1, n, n, generator=gen) > 0.3) | torch.eye(n, dtype=torch.bool)
    bias = torch.randn(4, n, n, generator=gen)

    def reference(x: torch.Tensor, keep: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q = attn.q_proj(x).view(2, n, 4, 8).transpose(1, 2)
        k = attn.k_proj(x).view(2, n, 2, 8).transpose(1, 2)
        v = attn.v_proj(x).view(2, n, 2, 8).transpose(1, 2)
        o = written_out(q, k, v, keep & window_allowed(n, 0), bias)
        return attn.out_proj(o.transpose(1, 2).reshape(2, n, 32))

    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with RoundingChains() as chains:
        got = run(gm, xa, keep, bias)["y"]
        want = reference(xb, keep, bias)
        tol = chains.tolerance(torch.float32, got, want)
    numerics.assert_close(got, want, tol)
    (ga,) = torch.autograd.grad(got.sum(), xa)
    (gb,) = torch.autograd.grad(want.sum(), xb)
    numerics.assert_close(ga, gb, chains.tolerance(torch.float32))


def test_mha_score_input_and_head_errors() -> None:
    x = "x: [B, T, 32]"
    fails(
        f"{x}\n  b: [B, 8, T, T]",
        "op: multi_head_attention, num_heads: 4, in: {query: x, score_bias: b}",
        "score_bias [B, 8, T, T] does not broadcast to the scores [B, h, T, S] = [B, 4, T, T]",
        "b}",
    )
    fails(
        f"{x}\n  b: [2, B, 4, T, T]",
        "op: multi_head_attention, num_heads: 4, in: {query: x, score_bias: b}",
        "score_bias [2, B, 4, T, T] does not broadcast to the scores [B, h, T, S] = [B, 4, T, T]",
        "b}",
    )
    fails(
        f"{x}\n  m: {{shape: [B, T], dtype: bool}}",
        "op: multi_head_attention, num_heads: 4, in: {query: x, mask: m}",
        "mask [B, T] does not broadcast to the scores [B, h, T, S] = [B, 4, T, T]",
        "m}",
    )
    fails(
        x,
        "op: multi_head_attention, num_heads: 4, head_dim: 6, rope: {rotary_dim: 8}",
        "rotary_dim 8 must be even and at most the head dim 6",
        "{rotary_dim",
    )
    fails(
        x,
        "op: multi_head_attention, num_heads: 5",
        "embed_dim 32 is not divisible by num_heads 5",
        "5",
    )
    assert out(x, "op: multi_head_attention, num_heads: 5, head_dim: 8") == (B, T, 32)
    for bad in ("softcap: 0.0", "scale: -1.0", "qk_norm: {kind: batch}", "bias: {o: false}"):
        messages = errors_of(spec(x, f"- {{id: n, op: multi_head_attention, num_heads: 4, {bad}}}"))
        assert len(messages) == 1, messages


def test_mha_labels_of_the_new_options() -> None:
    from archcomp.ops.attention import MultiHeadAttentionArgs, multi_head_attention_label

    capped = MultiHeadAttentionArgs(num_heads=8, num_kv_heads=2, causal=True, softcap=50.0)
    assert multi_head_attention_label(capped) == "Soft-Capped Masked Grouped-Query Attention"
    sliding = MultiHeadAttentionArgs(num_heads=8, causal=True, window=4, softcap=50.0)
    assert multi_head_attention_label(sliding) == "Soft-Capped Sliding-Window Attention"
    normed = MultiHeadAttentionArgs(num_heads=8, head_dim=128, qk_norm={"kind": "rms"})
    assert multi_head_attention_label(normed) == "Multi-Head Attention"


def test_mha_new_options_compile_fullgraph_export_and_emit(tmp_path: Any) -> None:
    from equivalence import check_compile_export_emit

    text = spec(
        "x: [B, T, 32]\n  m: {shape: [B, 1, T, T], dtype: bool}\n  b: [4, T, T]",
        "- {id: attn, op: multi_head_attention, num_heads: 4, num_kv_heads: 2, head_dim: 12,"
        " v_head_dim: 6, bias: {out: false}, qk_norm: {per_head: true}, scale: 0.3,"
        " softcap: 3.0, causal: true, window: 3, rope: {max_len: 32},"
        " in: {query: x, mask: m, score_bias: b}}",
        "{y: attn}",
    )
    _, gm = compile_spec(text)
    n = 6
    keep = (torch.rand(2, 1, n, n) > 0.3) | torch.eye(n, dtype=torch.bool)
    check_compile_export_emit(gm, (torch.randn(2, n, 32), keep, torch.randn(4, n, n)), tmp_path)


def test_mha_fused_qkv_is_the_three_projections_stacked() -> None:
    """qkv_name: one projection whose rows are q, then k, then v (Phi-3's qkv_proj) gives the
    output of q_proj, k_proj and v_proj holding those rows, forward and gradients (to rounding:
    one matmul in place of three)."""
    args = "num_heads: 4, num_kv_heads: 2, causal: true, rope: {max_len: 16}"
    _, fused = compile_spec(mha_text(f"{args}, qkv_name: qkv_proj"))
    _, plain = compile_spec(mha_text(args))
    redraw(fused, 5)
    w, b = fused.attn.qkv_proj.weight, fused.attn.qkv_proj.bias  # (32 + 2 * 16, 32)
    assert tuple(w.shape) == (64, 32)
    state = {f"attn.{p}_proj.{t}": x for t, whole in (("weight", w), ("bias", b))
             for p, x in zip("qkv", whole.split((32, 16, 16)), strict=True)}  # fmt: skip
    state |= {k: v for k, v in fused.state_dict().items() if "out_proj" in k}
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 9, 32, requires_grad=True)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    with RoundingChains() as chains:
        got, want = run(fused, x, pad)["y"], run(plain, x, pad)["y"]
        (g1,), (g2,) = (torch.autograd.grad(y.sum(), [x]) for y in (got, want))
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want))
    numerics.assert_close(g1, g2, chains.tolerance(torch.float32, g1, g2))


def test_mha_per_head_qkv_is_each_heads_rows() -> None:
    """qkv_layout per_head (GPT-NeoX's query_key_value): rows q_i, k_i, v_i for head i, the
    same output and gradients as q_proj, k_proj, v_proj holding each head's rows."""
    args = "num_heads: 4, causal: true, rope: {max_len: 16, rotary_dim: 2}, out_name: dense"
    _, fused = compile_spec(mha_text(f"{args}, qkv_name: query_key_value, qkv_layout: per_head"))
    _, plain = compile_spec(mha_text(args))
    redraw(fused, 6)
    w = fused.attn.query_key_value.weight.view(4, 3, 8, 32)  # (h, q|k|v, d, E)
    b = fused.attn.query_key_value.bias.view(4, 3, 8)
    state = {f"attn.{p}_proj.{t}": x[:, i].reshape(32, -1).squeeze(-1) for i, p in enumerate("qkv")
             for t, x in (("weight", w), ("bias", b))}  # fmt: skip
    state |= {k: v for k, v in fused.state_dict().items() if "dense" in k}
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 9, 32, requires_grad=True)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    with RoundingChains() as chains:
        got, want = run(fused, x, pad)["y"], run(plain, x, pad)["y"]
        (g1,), (g2,) = (torch.autograd.grad(y.sum(), [x]) for y in (got, want))
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want))
    numerics.assert_close(g1, g2, chains.tolerance(torch.float32, g1, g2))


def test_mha_fused_qkv_errors() -> None:
    node = "op: multi_head_attention, num_heads: 4, qkv_name: qkv_proj"
    one_input = "qkv_name fuses the projections of one input: self-attention only"
    fails(
        "x: [B, 12, 32]\n  m: [B, 7, 32]",
        f"{node}, in: {{query: x, key: m}}",
        one_input,
        "qkv_proj,",
    )
    one_bias = "a fused qkv projection has one bias for q, k and v"
    fails("x: [B, 12, 32]", f"{node}, bias: {{out: false}}", one_bias, "{out")
    per_head = (
        "qkv_layout per_head holds q, k and v of each head: one key/value head per query head, "
        "v the size of q"
    )
    fails("x: [B, 12, 32]", f"{node}, num_kv_heads: 2, qkv_layout: per_head", per_head, "per_h")


@pytest.mark.parametrize(
    ("q_shape", "kv_shape"),
    [((5, 8), (7, 8)), ((6, 5, 8), (2, 7, 8)), ((2, 3, 4, 5, 8), (2, 3, 2, 7, 8))],
    ids=["no-heads", "grouped", "grouped-5d"],
)
@pytest.mark.parametrize("mask", ["causal", "bool", "additive"])
def test_softcapped_attend_matches_written_out_forward_and_backward(
    q_shape: tuple[int, ...], kv_shape: tuple[int, ...], mask: str
) -> None:
    """The soft-capped path (query heads stacked on their K/V head, scale in the GEMM, tanh
    and mask in place) against softcap * tanh(s / softcap) with K/V repeated per head."""
    from archcomp.nn.attention import attend

    gen = torch.Generator().manual_seed(3)
    q = torch.randn(q_shape, generator=gen, requires_grad=True)
    k = torch.randn(kv_shape, generator=gen, requires_grad=True)
    v = torch.randn(kv_shape, generator=gen, requires_grad=True)
    T, S = q_shape[-2], kv_shape[-2]
    keep = torch.rand(T, S, generator=gen) > 0.3
    keep[:, 0] = True  # every query sees a key
    attn_mask = {"causal": None, "bool": keep, "additive": torch.randn(T, S, generator=gen)}[mask]
    gqa, cap, scale = len(q_shape) > 2 and q_shape[-3] != kv_shape[-3], 1.5, 0.3
    with RoundingChains() as chains:
        got = attend(q, k, v, attn_mask, mask == "causal", 0.0, scale, cap, gqa)
        groups = q_shape[-3] // kv_shape[-3] if gqa else 1
        kk, vv = (t.repeat_interleave(groups, -3) if gqa else t for t in (k, v))
        scores = torch.tanh(q @ kk.transpose(-2, -1) * scale / cap) * cap
        if mask == "causal":
            scores = scores.masked_fill(torch.ones(T, S, dtype=torch.bool).triu(1), -math.inf)
        elif mask == "bool":
            scores = scores.masked_fill(~keep, -math.inf)
        else:
            scores = scores + attn_mask
        want = scores.softmax(-1) @ vv
        forward = chains.tolerance(torch.float32, got, want)
        grad = torch.randn(got.shape, generator=gen)
        mine = torch.autograd.grad(got, (q, k, v), grad)
        theirs = torch.autograd.grad(want, (q, k, v), grad)
    numerics.assert_close(got, want, forward)
    for a, b in zip(mine, theirs, strict=True):
        numerics.assert_close(a, b, chains.tolerance(torch.float32))


def test_mha_relative_position_bias_is_swins_table_added_to_the_scores() -> None:
    """``relative_position_bias: 2`` holds Swin's table inside the op (transformers 5's
    SwinAttention keys): the same as a ``swin_relative_position_bias`` node given as
    score_bias, with a mask on top; params and buffers declared; T other than Wh Ww refused."""
    inputs = "x: [B, 4, 8]\n  m: [B, 1, 4, 4]"
    inside = spec(
        inputs,
        "- {id: attn, op: multi_head_attention, num_heads: 2, relative_position_bias: 2,"
        " in: {query: x, mask: m}}",
        "{y: attn}",
    )
    g, gm = compile_spec(inside)  # check_state: declared params and buffers are the module's
    assert declared(g, "attn")["relative_position_bias.relative_position_bias_table"] == (9, 2)
    outside = spec(
        inputs,
        "- {id: rpb, op: swin_relative_position_bias, window_size: 2, num_heads: 2}\n"
        "- {id: attn, op: multi_head_attention, num_heads: 2,"
        " in: {query: x, mask: m, score_bias: rpb}}",
        "{y: attn}",
    )
    _, ref = compile_spec(outside)
    redraw(gm, 3)
    state = {
        k.replace("attn.relative_position_bias.", "rpb."): v for k, v in gm.state_dict().items()
    }
    ref.load_state_dict(state, strict=True)
    gen = torch.Generator().manual_seed(3)
    x, m = torch.randn(3, 4, 8, generator=gen), torch.randn(3, 1, 4, 4, generator=gen)
    with RoundingChains() as chains:
        got, want = run(gm, x, m)["y"], run(ref, x, m)["y"]
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want))
    fails(
        "x: [B, 5, 8]",
        "op: multi_head_attention, num_heads: 2, relative_position_bias: 2",
        "a relative position bias of 2 x 2 windows needs 4 queries and 4 keys, found 5 and 5",
        "2}",
    )
