"""Positional encodings (archcomp/ops/positional.py): sinusoidal and learned encodings,
rotary_embedding. Shapes, buffers, errors, and values against transformers' Llama, GPT-NeoX
and GPT-J functions and Meta's complex-number RoPE.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import math

import numerics
import pytest
import torch
from lowering import (
    check_declared,
    compile_for_test,
    compile_spec,
    declared,
    error_of,
    errors_of,
    fails,
    hf_rope,
    param_shapes,
    posenc_spec,
    run,
    spec,
    spec_body,
    where_on,
)
from numerics import RoundingChains, Tolerance, assert_same
from torch.testing import assert_close

from archcomp import load_graph
from archcomp.ir import TensorType
from archcomp.ir.dims import Sym

B, S, T = (Sym.symbol(n) for n in "BST")


OPS = {"rotary_embedding": ("posenc", "RoPE")}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


LLAMA3 = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,  # short, so that all three bands occur at d = 64
}


def _meta_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Meta's original Llama RoPE on x (B, h, T, d): pairs (2i, 2i+1) as complex numbers times
    e^(i t theta^(-2i/d))."""
    d, n = x.shape[-1], x.shape[-2]
    freqs = 1.0 / (theta ** (torch.arange(0, d, 2)[: d // 2].float() / d))
    freqs_cis = torch.polar(torch.ones(n, d // 2), torch.outer(torch.arange(n).float(), freqs))
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs_cis).flatten(-2)


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


def test_scaling_chosen_by_a_param_leaves_out_the_fields_its_type_does_not_read() -> None:
    """``type: default`` is no scaling; a ``${...}`` that gives null leaves a field out (the
    llama block's rope_type), while a null written as such is still a value given."""
    node = (
        "- {{id: n, op: rotary_embedding, max_len: 8, scaling: {{type: {t}, "
        "factor: \"${{null if '{t}' == 'default' else 2.0}}\", "
        "low_freq_factor: \"${{1.5 if '{t}' == 'llama3' else null}}\"}}}}"
    )
    got = {
        t: compile_for_test(load_graph(spec("x: [B, 4, T, 16]", node.format(t=t)))).n.scaling
        for t in ("default", "linear", "llama3")
    }
    assert got["default"] is None
    assert (got["linear"].type, got["linear"].factor) == ("linear", 2.0)
    assert (got["llama3"].factor, got["llama3"].low_freq_factor) == (2.0, 1.5)
    text = spec(
        "x: [B, 4, T, 16]",
        "- {id: n, op: rotary_embedding, scaling: {type: linear, factor: 2, beta_fast: null}}",
    )
    assert errors_of(text) == ["'beta_fast': expected a float, found null"]
    text = spec("x: [B, 4, T, 16]", "- {id: n, op: rotary_embedding, scaling: {type: default}}")
    assert compile_for_test(load_graph(text)).n.scaling is None


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
    cos, sin = hf_rope(64, rope_parameters, 100)
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
    assert (line, col) == where_on(text, "max_len", "64")


def test_posenc_errors() -> None:
    # sinusoidal's default max_len is 5000
    msg, _, _ = error_of(posenc_spec("sinusoidal_positional_encoding", seq="6000"))
    assert msg == "sequence length 6000 exceeds max_len 5000"
    text = posenc_spec("learned_positional_encoding")
    msg, line, col = error_of(text)
    assert msg == "missing required argument 'max_len'"
    assert (line, col) == where_on(text, "{id: pos", "{id")
    text = spec_body(
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
    text = spec_body(
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


# -- variants: BART's offset, Whisper's sinusoid layout ---------------------------------------


def test_learned_offset_matches_transformers_bart_positions() -> None:
    """BART's embed_positions: max_position_embeddings + 2 rows, positions start at row 2."""
    from transformers.models.bart.modeling_bart import BartLearnedPositionalEmbedding

    g, gm = compile_spec(posenc_spec("learned_positional_encoding", ", max_len: 10, offset: 2"))
    ref = BartLearnedPositionalEmbedding(10, 16)
    m = gm.get_submodule("pos")
    assert (
        param_shapes(m)
        == declared(g, "pos")
        == {"weight": tuple(ref.weight.shape)}
        == {"weight": (12, 16)}
    )
    with torch.no_grad():
        m.weight.copy_(ref.weight)
    x = torch.randn(3, 7, 16)
    got = run(gm, x)["pos"]
    want = x + ref(torch.zeros(3, 7, dtype=torch.long))  # a lookup and one add: bitwise
    assert_same(got, want)
    (got * want).sum().backward()
    grad = want.sum(0)  # d/dw of sum(y * want) at the looked-up rows
    assert_same(m.weight.grad[2:9], grad)
    assert_same(m.weight.grad[:2], torch.zeros(2, 16))  # rows no position uses
    with pytest.raises(AssertionError):  # a planted bug: positions from row 0, as GPT-2
        assert_same(x + m.weight[:7], want)
    with pytest.raises(RuntimeError, match="exceeds max_len"):
        gm(torch.randn(1, 11, 16))  # 10 positions, not 12
    fails(
        "x: [B, S, 16]",
        "op: learned_positional_encoding, max_len: 8, offset: -1",
        "'offset': input should be greater than or equal to 0, found -1",
        "-1}",
    )


def test_sinusoidal_concat_layout_is_whispers_table() -> None:
    """layout: concat is Whisper's sinusoids(), bitwise (the same float32 ops); interleaved is
    the paper's formula. The two hold the same kind of values in different columns and with
    different timescales."""
    from transformers.models.whisper.modeling_whisper import sinusoids

    g, gm = compile_spec(
        posenc_spec("sinusoidal_positional_encoding", ", max_len: 30, layout: concat", d=12)
    )
    pe = gm.get_submodule("pos").pe
    assert g.nodes["pos"].op.buffer_shapes(g.nodes["pos"].args) == {"pe": (30, 12)}
    assert_same(pe, sinusoids(30, 12))
    x = torch.randn(2, 9, 12)
    assert_same(run(gm, x)["pos"], x + sinusoids(9, 12))
    # the formula in float64: sin of the first half, cos of the second, log(1e4) / (d/2 - 1)
    p = torch.arange(30, dtype=torch.float64)[:, None]
    w = torch.exp(-torch.arange(6, dtype=torch.float64) * math.log(10000.0) / 5)
    formula = torch.cat([torch.sin(p * w), torch.cos(p * w)], 1)
    tol = Tolerance(torch.float32, 4 + 30)  # exp, product, sin/cos of angles up to 29
    numerics.assert_close(pe, formula.float(), tol)
    with pytest.raises(AssertionError):  # a planted bug: the paper's timescales 1e4^(2i/d)
        w_bug = 10000.0 ** (-torch.arange(6, dtype=torch.float64) * 2 / 12)
        numerics.assert_close(
            pe, torch.cat([torch.sin(p * w_bug), torch.cos(p * w_bug)], 1).float(), tol
        )
    interleaved = (
        compile_spec(posenc_spec("sinusoidal_positional_encoding", ", max_len: 30", d=12))[1]
        .get_submodule("pos")
        .pe
    )
    assert not torch.allclose(interleaved, pe)
    fails(
        "x: [B, S, 7]",
        "op: sinusoidal_positional_encoding, layout: concat",
        "the concat layout needs an even d_model of at least 4, found 7",
        "concat",
    )
    fails(
        "x: [B, S, 2]",
        "op: sinusoidal_positional_encoding, layout: concat",
        "the concat layout needs an even d_model of at least 4, found 2",
        "concat",
    )


# -- RoPE scaling: linear, dynamic, yarn, longrope against transformers -----------------------

_FACTORS = ", ".join(f"{1 + 0.1 * i:.1f}" for i in range(16))
_LONG = ", ".join(f"{2 + 0.5 * i:.1f}" for i in range(16))
# archcomp's scaling (theta 10000, head dim 32, max_len 256) and transformers' rope_parameters
# for a Llama config of max_position_embeddings 256
SCALINGS = {
    "linear": ("{type: linear, factor: 4.0}", {"rope_type": "linear", "factor": 4.0}),
    "dynamic": (
        "{type: dynamic, factor: 4.0, original_max_len: 256}",
        {"rope_type": "dynamic", "factor": 4.0},
    ),
    "yarn": (
        "{type: yarn, factor: 4.0, original_max_len: 64}",
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    ),
    "yarn-deepseek": (
        "{type: yarn, factor: 4.0, original_max_len: 64, mscale: 1.0, mscale_all_dim: 0.707,"
        " beta_fast: 16, beta_slow: 2}",
        {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 64,
            "mscale": 1.0,
            "mscale_all_dim": 0.707,
            "beta_fast": 16,
            "beta_slow": 2,
        },
    ),
    "longrope": (
        f"{{type: longrope, original_max_len: 64, short_factor: [{_FACTORS}],"
        f" long_factor: [{_LONG}]}}",
        {
            "rope_type": "longrope",
            "original_max_position_embeddings": 64,
            "short_factor": [1 + 0.1 * i for i in range(16)],
            "long_factor": [2 + 0.5 * i for i in range(16)],
        },
    ),
}


def _hf_init(params: dict, seq_len: int | None) -> tuple[torch.Tensor, float]:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    full = {"rope_theta": 10000.0, **params}
    cfg = LlamaConfig(
        hidden_size=128, num_attention_heads=4, max_position_embeddings=256, rope_parameters=full
    )
    return ROPE_INIT_FUNCTIONS[params["rope_type"]](cfg, "cpu", seq_len=seq_len)


@pytest.mark.parametrize("name", sorted(SCALINGS))
def test_rope_scaling_frequencies_match_transformers_init_functions(name: str) -> None:
    """inverse frequencies and attention_scaling of each type, at the original length and past
    it (dynamic and longrope differ there), are transformers' ROPE_INIT_FUNCTIONS'."""
    from archcomp.nn.rotary import attention_scaling, inverse_frequencies

    ours, params = SCALINGS[name]
    g = load_graph(
        spec(
            "x: [B, 4, T, 32]", f"- {{id: n, op: rotary_embedding, max_len: 256, scaling: {ours}}}"
        )
    )
    scaling = compile_for_test(g).n.scaling
    for seq_len in (None, 300):
        want, factor = _hf_init(params, seq_len)
        got = inverse_frequencies(32, 10000.0, scaling, seq_len=seq_len)
        assert_same(got, want)  # the same float32 ops, in the same order
        assert attention_scaling(scaling) == pytest.approx(factor, rel=1e-15)
    # a planted bug: a factor (longrope: the long factors) 1% off changes the frequencies
    if name == "longrope":
        bug = scaling._replace(long_factor=tuple(f * 1.01 for f in scaling.long_factor))
    else:
        bug = scaling._replace(factor=scaling.factor * 1.01)
    assert not torch.equal(inverse_frequencies(32, 10000.0, bug, seq_len=300), want)


def _rope_pair(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op on x (2, 4, n, 32) against apply_rotary_pos_emb with LlamaRotaryEmbedding's
    tables (a fresh forward: dynamic and longrope pick theirs by n); outputs and x's grads."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    ours, params = SCALINGS[name]
    if name == "longrope":  # transformers' factor: its max_position_embeddings / original
        ours = ours.replace("{type: longrope,", "{type: longrope, factor: 4.0,")
    node = f"- {{id: n, op: rotary_embedding, max_len: 512, scaling: {ours}}}"
    _, gm = compile_spec(spec("q: [B, 4, T, 32]", node))
    cos, sin = hf_rope(32, {"rope_theta": 10000.0, **params}, n)
    torch.manual_seed(0)
    x = torch.randn(2, 4, n, 32)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = run(gm, xa)["y"]
    want, _ = apply_rotary_pos_emb(xb, xb, cos, sin)
    w = torch.randn_like(want)
    ga, gb = (torch.autograd.grad((t * w).sum(), v)[0] for t, v in ((got, xa), (want, xb)))
    return got, want, ga, gb


@pytest.mark.parametrize("name", sorted(SCALINGS))
@pytest.mark.parametrize("n", [40, 300])
def test_rope_scaling_forward_and_backward_match_transformers_llama(name: str, n: int) -> None:
    with RoundingChains() as chains:
        got, want, ga, gb = _rope_pair(name, n)
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want))
    numerics.assert_close(ga, gb, chains.tolerance(torch.float32))


def test_rope_scaling_errors() -> None:
    x = "x: [B, 4, T, 16]"
    for scaling, message in (
        ("{type: linear}", "scaling type 'linear' needs factor"),
        ("{type: linear, factor: 2, beta_fast: 8}", "scaling type 'linear' takes no beta_fast"),
        ("{type: dynamic, factor: 2}", "scaling type 'dynamic' needs original_max_len"),
        ("{type: yarn, original_max_len: 64}", "scaling type 'yarn' needs factor"),
        (
            "{type: longrope, original_max_len: 64, short_factor: [1, 1], long_factor: [2, 2]}",
            "scaling's short_factor has 2 entries; the rotary width 16 needs 8",
        ),
        ("{type: llama3, short_factor: [1]}", "scaling type 'llama3' takes no short_factor"),
    ):
        fails(x, f"op: rotary_embedding, scaling: {scaling}", message, scaling[:8])
    fails(
        "x: [B, 4, T, 2]",
        "op: rotary_embedding, scaling: {type: dynamic, factor: 2, original_max_len: 8}",
        "dynamic scaling needs a rotary width above 2, found 2",
        "{type: dynamic",
    )
    text = spec(x, "- {id: n, op: rotary_embedding, scaling: {type: ntk, factor: 2}}")
    assert errors_of(text) == [
        "'type': expected 'default', 'llama3', 'linear', 'dynamic', 'yarn' or 'longrope', found "
        "string 'ntk'"
    ]


def test_rope_dynamic_scaling_compiles_emits_and_works_inside_attention() -> None:
    """dynamic: the branch on T compiles (a guard per side of original_max_len); the emitted
    source rebuilds the scaling; multi_head_attention's rope takes every type."""
    import archcomp
    from archcomp.backends.torch.emit import emit_python
    from archcomp.nn.rotary import DynamicScaling, RotaryEmbedding

    m = RotaryEmbedding(16, max_len=64, scaling=DynamicScaling(2.0, 16))
    x = torch.randn(1, 2, 40, 16)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager", dynamic=True)
    for n in (40, 30, 8):
        assert_same(compiled(x[:, :, :n]), m(x[:, :, :n]))
    assert not torch.equal(m(x)[:, :, :8], RotaryEmbedding(16, max_len=64)(x)[:, :, :8])
    assert_same(m(x[:, :, :8]), RotaryEmbedding(16, max_len=64)(x[:, :, :8]))  # short: plain
    text = spec_body(
        """
        inputs:
          x: [B, T, 64]
        nodes:
          - {id: attn, op: multi_head_attention, num_heads: 4, causal: true,
             rope: {max_len: 64, scaling: {type: yarn, factor: 4.0, original_max_len: 16}}}
        outputs: attn
        """
    )
    model = archcomp.build(text, seed=0)
    assert model.attn.rotary.scaling.type == "yarn"
    source = emit_python(model)
    assert "(4.0, 16, 32.0, 1.0, None, None, None, True, 'yarn')" in source
    namespace: dict = {}
    exec(compile(source, "emitted", "exec"), namespace)  # the standalone source, rebuilt
    emitted = namespace["M"]()
    emitted.load_state_dict(model.state_dict())
    assert emitted.attn.rotary.scaling == model.attn.rotary.scaling
    x = torch.randn(2, 40, 64)
    assert_same(emitted(x), model(x))
