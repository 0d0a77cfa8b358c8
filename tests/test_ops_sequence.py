"""Sequence ops: multi_head_attention, scaled_dot_product_attention, positional encodings,
rnn / lstm / gru. Shape inference, errors, parameter shapes and numerics against torch.

Lowerings are exercised through the real compiler (archcomp/backends/torch, via
tests/lowering.py), as users run them.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from typing import Any

import numerics
import pytest
import torch
from lowering import compile_for_test, run
from numerics import RoundingChains, Tolerance, assert_same
from torch import nn

from archcomp import SpecError, load_graph
from archcomp.ir import Graph, Ref, TensorType
from archcomp.ir.dims import Sym

B, S, T = Sym.symbol("B"), Sym.symbol("S"), Sym.symbol("T")


def spec(body: str) -> str:
    return "archcomp: 1\nname: m\n" + textwrap.dedent(body).strip() + "\n"


def error_of(text: str) -> tuple[str, int, int]:
    """The single diagnostic of a failing spec: message, line, column."""
    with pytest.raises(SpecError) as info:
        load_graph(text)
    diags = info.value.diagnostics
    assert len(diags) == 1, info.value.format()
    d = diags[0]
    assert d.loc is not None
    return d.message, d.loc.line, d.loc.col


def where(text: str, line_has: str, token: str) -> tuple[int, int]:
    """1-based line and column of ``token`` on the first line containing ``line_has``."""
    for i, line in enumerate(text.splitlines(), 1):
        if line_has in line:
            return i, line.index(token, line.index(line_has)) + 1
    raise AssertionError(f"{line_has!r} not in spec")


def param_shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in m.named_parameters()}


def declared(g: Graph, node: str) -> dict[str, tuple[int, ...]]:
    n = g.nodes[node]
    return {k: tuple(int(d) for d in v) for k, v in n.op.param_shapes(n.args).items()}  # type: ignore[arg-type]


# -- multi_head_attention: shapes and errors --------------------------------------------------

MHA_SELF = spec(
    """
    inputs:
      x: [B, T, 512]
    nodes:
      - {id: attn, op: multi_head_attention, num_heads: 8}
    outputs: attn
    """
)


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
        spec(
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
    assert (line, col) == where(text, "num_heads", "3")


def test_mha_explicit_embed_dim_must_agree() -> None:
    text = MHA_SELF.replace("num_heads: 8", "num_heads: 8, embed_dim: 256")
    msg, line, col = error_of(text)
    assert msg == "embed_dim is 256 but the input gives 512"
    assert (line, col) == where(text, "embed_dim", "256")


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
    text = spec(
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
    assert (line, col) == where(text, "key_padding_mask: pad", "pad}")


def test_mha_batch_and_rank_errors() -> None:
    text = spec(
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
    assert (line, col) == where(text, "key: memory", "memory}")

    text = spec(
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
    assert (line, col) == where(text, "num_heads", "0")
    msg, _, _ = error_of(MHA_SELF.replace("num_heads: 8", "num_heads: 8, dropout: 1.5"))
    assert msg == "'dropout': input should be less than 1, found 1.5"
    text = MHA_SELF.replace("num_heads: 8", "num_heads: 8, nhead: 8")
    msg, line, col = error_of(text)
    assert msg == "unknown argument 'nhead' for op 'multi_head_attention'"
    assert (line, col) == where(text, "nhead", "nhead")


def test_mha_macs() -> None:
    g = load_graph(MHA_SELF)
    n = g.nodes["attn"]
    assert n.op.macs is not None
    ins = {p: g.type_of(r) for p, r in n.inputs.items()}
    macs = n.op.macs(n.args, ins, n.outputs)
    # 4 projections of B*T rows x 512x512, plus Q K^T and A V: 2 * B*T*T*512
    assert macs == Sym({("B", "T"): 4 * 512 * 512, ("B", "T", "T"): 2 * 512})


# -- scaled_dot_product_attention ----------------------------------------------------------


SDPA = spec(
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
    assert (line, col) == where(text, "key: k", "k,")
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


# -- multi_head_attention: numerics vs torch.nn.MultiheadAttention ------------------------------


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
    text = spec(
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
        text = spec(
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


# -- positional encodings -------------------------------------------------------------------


def posenc_spec(op: str, args: str = "", seq: str = "S", d: int = 16) -> str:
    return spec(
        f"""
        inputs:
          x: [B, {seq}, {d}]
        nodes:
          - {{id: pos, op: {op}{args}}}
        outputs: pos
        """
    )


@pytest.mark.parametrize("op", ["sinusoidal_positional_encoding", "learned_positional_encoding"])
def test_posenc_shape_style(op: str) -> None:
    g = load_graph(posenc_spec(op, ", max_len: 64"))
    n = g.nodes["pos"]
    assert n.outputs["out"] == TensorType((B, S, 16))
    assert n.args.d_model == 16
    style = n.op.style
    assert (style.family, style.label, style.shape) == ("posenc", "Positional Encoding", "circle")


@pytest.mark.parametrize("op", ["sinusoidal_positional_encoding", "learned_positional_encoding"])
def test_posenc_too_long_names_max_len(op: str) -> None:
    text = posenc_spec(op, ", max_len: 64", seq="100")
    msg, line, col = error_of(text)
    assert msg == "sequence length 100 exceeds max_len 64"
    assert (line, col) == where(text, "max_len", "64")


def test_posenc_errors() -> None:
    # sinusoidal's default max_len is 5000
    msg, _, _ = error_of(posenc_spec("sinusoidal_positional_encoding", seq="6000"))
    assert msg == "sequence length 6000 exceeds max_len 5000"
    text = posenc_spec("learned_positional_encoding")
    msg, line, col = error_of(text)
    assert msg == "missing required argument 'max_len'"
    assert (line, col) == where(text, "{id: pos", "{id")
    text = spec(
        """
        inputs:
          ids: {shape: [B, S], dtype: int64}
        nodes:
          - {id: pos, op: learned_positional_encoding, max_len: 8}
        outputs: pos
        """
    )
    assert error_of(text)[0] == "a positional encoding needs a floating-point input, found int64"


def test_sinusoidal_values_and_buffer() -> None:
    from archcomp.nn.positional import sinusoid_table

    g = load_graph(posenc_spec("sinusoidal_positional_encoding", ", max_len: 50", d=6))
    gm = compile_for_test(g)
    x = torch.randn(2, 7, 6)
    pe = torch.tensor(
        [
            [
                math.sin(p / 10000 ** (i / 6))
                if i % 2 == 0
                else math.cos(p / 10000 ** ((i - 1) / 6))
                for i in range(6)
            ]
            for p in range(7)
        ]
    )
    with RoundingChains() as chains:  # the table's own roundings: powers, products, sin/cos
        sinusoid_table(7, 6)
    numerics.assert_close(run(gm, x)["pos"], x + pe, Tolerance(torch.float32, chains.longest + 1))
    m = gm.get_submodule("pos")
    n = g.nodes["pos"]
    assert (
        {k: tuple(b.shape) for k, b in m.named_buffers()}
        == n.op.buffer_shapes(n.args)
        == {"pe": (50, 6)}
    )
    assert list(m.state_dict()) == [] and list(m.parameters()) == []


def test_sinusoidal_odd_width() -> None:
    from archcomp.nn.positional import sinusoid_table

    with RoundingChains() as chains:
        pe = sinusoid_table(4, 5)
    assert pe.shape == (4, 5)
    tol = chains.tolerance(torch.float32)  # against the formula in float64
    numerics.assert_close(pe[3, 4], torch.tensor(math.sin(3 / 10000 ** (4 / 5))), tol)
    numerics.assert_close(pe[3, 3], torch.tensor(math.cos(3 / 10000 ** (2 / 5))), tol)


def test_learned_values_params_and_gradients() -> None:
    g = load_graph(posenc_spec("learned_positional_encoding", ", max_len: 10"))
    gm = compile_for_test(g)
    m = gm.get_submodule("pos")
    assert param_shapes(m) == declared(g, "pos") == {"weight": (10, 16)}
    x = torch.randn(3, 4, 16)
    out = run(gm, x)["pos"]
    assert_same(out, x + m.weight[:4])
    out.sum().backward()
    assert_same(m.weight.grad[:4], torch.full((4, 16), 3.0))
    assert_same(m.weight.grad[4:], torch.zeros(6, 16))
    with pytest.raises(RuntimeError, match="exceeds max_len"):
        gm(torch.randn(1, 11, 16))


def test_bert_style_embeddings_sum() -> None:
    """BERT: token + learned position + segment embeddings, then layer norm (here: the sum)."""
    text = spec(
        """
        inputs:
          ids: {shape: [B, S], dtype: int64}
          segments: {shape: [B, S], dtype: int64}
        nodes:
          - {id: tok, op: embedding, in: ids, num_embeddings: 100, embedding_dim: 12}
          - {id: pos, op: learned_positional_encoding, max_len: 16}
          - {id: seg, op: embedding, in: segments, num_embeddings: 2, embedding_dim: 12}
          - {id: emb, op: add, in: [pos, seg]}
        outputs: emb
        """
    )
    g = load_graph(text)
    assert g.output_types["emb"] == TensorType((B, S, 12))
    gm = compile_for_test(g)
    ids, segs = torch.randint(0, 100, (2, 9)), torch.randint(0, 2, (2, 9))
    expected = gm.tok.weight[ids] + gm.pos.weight[:9] + gm.seg.weight[segs]
    assert_same(run(gm, ids, segs)["emb"], expected)


def test_posenc_compiles_fullgraph() -> None:
    from archcomp.nn.positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding

    x = torch.randn(2, 5, 8)
    for m in (SinusoidalPositionalEncoding(8, 16), LearnedPositionalEncoding(8, 16)):
        with RoundingChains() as chains:
            eager = m(x)
        tol = chains.tolerance(eager.dtype, eager)
        torch._dynamo.reset()
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
        numerics.assert_close(compiled(x), eager, tol, msg="torch.compile")
        numerics.assert_close(torch.export.export(m, (x,)).module()(x), eager, tol, msg="export")


# -- rnn / lstm / gru ---------------------------------------------------------------------------


def rnn_spec(
    op: str,
    args: str,
    x: str = "[B, S, 10]",
    states: str = "",
    outputs: str = "{out: rnn.output, h: rnn.h_n}",
) -> str:
    """One recurrent node ``rnn``; ``states`` like "h0: [1, B, 8]; c0: [1, B, 8]"."""
    decls = [s.strip() for s in states.split(";") if s.strip()]
    names = [d.split(":")[0] for d in decls]
    lines = ["inputs:", f"  x: {x}", *(f"  {d}" for d in decls), "nodes:"]
    ports = ", in: {x: x" + "".join(f", {n}: {n}" for n in names) + "}" if names else ""
    lines.append(f"  - {{id: rnn, op: {op}, {args}{ports}}}")
    lines.append(f"outputs: {outputs}")
    return spec("\n".join(lines))


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru"])
def test_recurrent_shapes(op: str) -> None:
    g = load_graph(rnn_spec(op, "hidden_size: 8, num_layers: 2, bidirectional: true"))
    n = g.nodes["rnn"]
    assert n.args.input_size == 10
    assert n.outputs["output"] == TensorType((B, S, 16))
    assert n.outputs["h_n"] == TensorType((4, B, 8))
    assert (n.outputs.get("c_n") is not None) == (op == "lstm")
    assert (n.op.style.family, n.op.style.label) == ("recurrent", op.upper())
    # batch_first: false is torch's sequence-first layout
    g = load_graph(rnn_spec(op, "hidden_size: 8, batch_first: false", x="[S, B, 10]"))
    assert g.output_types == {"out": TensorType((S, B, 8)), "h": TensorType((1, B, 8))}


def test_lstm_results_selectable() -> None:
    g = load_graph(rnn_spec("lstm", "hidden_size: 8", outputs="{c: rnn.c_n}"))
    assert g.output_types["c"] == TensorType((1, B, 8))
    text = rnn_spec("gru", "hidden_size: 8", outputs="{c: rnn.c_n}")
    msg, _, _ = error_of(text)
    assert msg == "'rnn.c_n': op 'gru' has no result 'c_n'"


def test_recurrent_errors() -> None:
    text = rnn_spec("lstm", "hidden_size: 8, dropout: 0.2")
    msg, line, col = error_of(text)
    assert msg == "dropout 0.2 applies between layers and has no effect with num_layers 1"
    assert (line, col) == where(text, "dropout", "0.2")

    text = rnn_spec("rnn", "hidden_size: 8, nonlinearity: sigmoid")
    msg, line, col = error_of(text)
    assert msg == "'nonlinearity': expected 'tanh' or 'relu', found string 'sigmoid'"
    assert (line, col) == where(text, "nonlinearity", "sigmoid")

    text = rnn_spec("gru", "hidden_size: 8", x="[B, 10]")
    assert error_of(text)[0] == "gru expects x as [B, S, input_size], found [B, 10]"

    text = rnn_spec("lstm", "hidden_size: 8, num_layers: 2", states="h0: [1, B, 8]")
    msg, line, col = error_of(text)
    assert msg == "h0 must be [D*num_layers, B, hidden_size] = [2, B, 8], found [1, B, 8]"
    assert (line, col) == where(text, "h0: h0", "h0}")

    text = rnn_spec("lstm", "hidden_size: 8, input_size: 12")
    assert error_of(text)[0] == "input_size is 12 but the input gives 10"


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("lstm", "hidden_size: 8, num_layers: 2, bidirectional: true"),
        ("lstm", "hidden_size: 8, bias: false"),
        ("gru", "hidden_size: 6, num_layers: 3"),
        ("rnn", "hidden_size: 5, nonlinearity: relu, bidirectional: true"),
    ],
)
def test_recurrent_params_match_torch_modules(op: str, args: str) -> None:
    g = load_graph(rnn_spec(op, args))
    m = compile_for_test(g).get_submodule("rnn")
    assert type(m) is {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[op]
    assert list(param_shapes(m).items()) == list(declared(g, "rnn").items())


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
def test_recurrent_numerics_match_torch(op: str, with_state: bool, torch_threads: int) -> None:
    is_lstm = op == "lstm"
    states = "h0: [4, B, 8]" + ("; c0: [4, B, 8]" if is_lstm else "")
    outs = "{out: rnn.output, h: rnn.h_n" + (", c: rnn.c_n}" if is_lstm else "}")
    text = rnn_spec(
        op,
        "hidden_size: 8, num_layers: 2, bidirectional: true",
        states=states if with_state else "",
        outputs=outs,
    )
    gm = compile_for_test(load_graph(text))
    ours = gm.get_submodule("rnn")
    ref = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[op](
        10, 8, num_layers=2, bidirectional=True, batch_first=True
    )
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 10)
    given = [torch.randn(4, 3, 8) for _ in range(2 if is_lstm else 1)] if with_state else []
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    with RoundingChains() as chains:
        got = run(gm, xs, *given)
        hx = (tuple(given) if is_lstm else given[0]) if with_state else None
        out, state = ref(xr, hx)
        h, c = state if is_lstm else (state, None)
        forward = chains.tolerance(out.dtype, out, h, *got.values())
        loss = got["out"].square().sum() + got["h"].sum()
        loss.backward()
        (out.square().sum() + h.sum()).backward()
    numerics.assert_close(got["out"], out, forward)
    numerics.assert_close(got["h"], h, forward)
    if is_lstm:
        assert c is not None
        numerics.assert_close(got["c"], c, forward)
    backward = chains.tolerance(out.dtype)
    assert xs.grad is not None and xr.grad is not None
    numerics.assert_close(xs.grad, xr.grad, backward)
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        numerics.assert_close(p.grad, q.grad, backward, msg=name)


def test_lstm_h0_alone_starts_cell_at_zero() -> None:
    text = rnn_spec("lstm", "hidden_size: 8", states="h0: [1, B, 8]")
    gm = compile_for_test(load_graph(text))
    x, h0 = torch.randn(2, 4, 10), torch.randn(1, 2, 8)
    out, (h, _) = gm.get_submodule("rnn")(x, (h0, torch.zeros_like(h0)))
    got = run(gm, x, h0)
    assert_same(got["out"], out)
    assert_same(got["h"], h)


def test_recurrent_macs() -> None:
    g = load_graph(rnn_spec("lstm", "hidden_size: 8, num_layers: 2"))
    n = g.nodes["rnn"]
    assert n.op.macs is not None
    # layer 0: 4 gates * 8 * (10 + 8); layer 1: 4 * 8 * (8 + 8); per batch row and step
    assert n.op.macs(n.args, {}, n.outputs) == Sym({("B", "S"): 4 * 8 * 18 + 4 * 8 * 16})


def test_lstm_classifier() -> None:
    """ARCHITECTURES.md 5: LSTM(10 -> 8, 2 layers), Linear(8 -> 2) on out[:, -1, :]."""
    text = spec(
        """
        inputs:
          x: [B, S, 10]
        nodes:
          - {id: lstm, op: lstm, hidden_size: 8, num_layers: 2}
          - {id: last, op: index, in: lstm.output, at: "[:, -1, :]"}
          - {id: fc, op: linear, out_features: 2}
        outputs: fc
        """
    )
    g = load_graph(text)
    assert g.output_types["fc"] == TensorType((B, 2))
    gm = compile_for_test(g)
    assert (
        sum(p.numel() for p in gm.parameters()) == 4 * 8 * (10 + 8 + 2) + 4 * 8 * (8 + 8 + 2) + 18
    )
    x = torch.randn(3, 6, 10)
    out, _ = gm.lstm(x)
    assert_same(run(gm, x)["fc"], gm.fc(out[:, -1, :]))


# -- check stays torch-free -------------------------------------------------------------------


def test_check_does_not_import_torch() -> None:
    code = (
        "import sys, archcomp\n"
        f"archcomp.load_graph({MHA_SELF!r})\n"
        f"archcomp.load_graph({rnn_spec('lstm', 'hidden_size: 8')!r})\n"
        f"archcomp.load_graph({posenc_spec('learned_positional_encoding', ', max_len: 9')!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
