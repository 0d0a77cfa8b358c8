"""Latent attention (archcomp/ops/latent_attention.py): multi_head_latent_attention. Shapes,
located errors, declared parameters (DeepSeek's names) and MACs; forward and gradients against
transformers' DeepseekV3Attention (with and without the query latent, interleaved and
rotate-half RoPE, attention_bias, a YaRN-style scale, a padding mask), planted bugs; what a
KV cache would hold; compile, export and emitted source; a meta build at DeepSeek-V3's sizes.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from lowering import (
    additive,
    check_declared,
    check_equivalent,
    compile_for_test,
    compile_spec,
    declared,
    errors_of,
    fails,
    hf_config,
    hf_names,
    macs,
    out,
    redraw,
    spec,
)
from numerics import assert_same

from archcomp import load_graph
from archcomp.ir.dims import Sym
from archcomp.ops.latent_attention import (
    MultiHeadLatentAttentionArgs,
    multi_head_latent_attention_label,
)
from archcomp.ops.positional import RotaryArgs

B, T = (Sym.symbol(n) for n in "BT")

OP = "multi_head_latent_attention"
# A small DeepSeek-V3-shaped attention: every size distinct, so a swapped one cannot pass.
DIMS = "num_heads: 4, kv_lora_rank: 16, qk_nope_head_dim: 8, qk_rope_head_dim: 6, v_head_dim: 10"
HF_DIMS = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "kv_lora_rank": 16,
    "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 6,
    "v_head_dim": 10,
}


def test_declared_with_style_label_and_lowering() -> None:
    check_declared(OP, "attention", "Multi-Head Latent Attention")
    args = MultiHeadLatentAttentionArgs(
        num_heads=2,
        kv_lora_rank=4,
        qk_nope_head_dim=2,
        qk_rope_head_dim=2,
        v_head_dim=2,
        rope=RotaryArgs(),
    )
    assert multi_head_latent_attention_label(args) == "Multi-Head Latent Attention"
    causal = args.model_copy(update={"causal": True})
    assert multi_head_latent_attention_label(causal) == "Masked Multi-Head Latent Attention"


def mla_text(args: str, x: str = "[B, T, 32]", mask: str = "") -> str:
    decl = f"\n  m: {mask}" if mask else ""
    ports = "in: {x: x, mask: m}, " if mask else ""
    node = f"- {{id: attn, op: multi_head_latent_attention, {ports}{args}}}"
    return spec(f"x: {x}{decl}", node, "{y: attn}")


# -- shapes, parameters, buffers, MACs -------------------------------------------------------


def test_shape_inferred_embed_dim_and_deepseek_parameter_names() -> None:
    assert out("x: [B, T, 32]", f"op: multi_head_latent_attention, {DIMS}, rope: {{}}") == (
        B,
        T,
        32,
    )
    g, gm = compile_spec(mla_text(f"{DIMS}, q_lora_rank: 12, bias: true, rope: {{max_len: 16}}"))
    n = g.nodes["attn"]
    assert n.args.embed_dim == 32
    assert n.op.param_shapes(n.args) == {
        "q_a_proj.weight": (12, 32),
        "q_a_proj.bias": (12,),
        "q_a_layernorm.weight": (12,),
        "q_b_proj.weight": (4 * 14, 12),
        "kv_a_proj_with_mqa.weight": (16 + 6, 32),
        "kv_a_proj_with_mqa.bias": (22,),
        "kv_a_layernorm.weight": (16,),
        "kv_b_proj.weight": (4 * (8 + 10), 16),
        "o_proj.weight": (32, 4 * 10),
        "o_proj.bias": (32,),
    }
    assert n.op.buffer_shapes(n.args) == {"rotary.cos": (16, 3), "rotary.sin": (16, 3)}
    assert list(gm.state_dict()) == [f"attn.{k}" for k in n.op.param_shapes(n.args)]
    g, _ = compile_spec(mla_text(f"{DIMS}, rope: {{}}"))  # check_state: q_proj alone
    n = g.nodes["attn"]
    assert [k for k in n.op.param_shapes(n.args) if k.startswith("q")] == ["q_proj.weight"]


def test_macs_count_projections_latent_norms_and_both_matmuls() -> None:
    g = load_graph(mla_text(f"{DIMS}, q_lora_rank: 12, rope: {{}}"))
    per_token = (
        32 * 12
        + 12
        + 12 * 4 * 14  # W^DQ, its norm, W^UQ (with the rope part)
        + 32 * (16 + 6)
        + 16  # W^DKV and W^KR, the latent's norm
        + 16 * 4 * (8 + 10)  # W^UK and W^UV
        + 4 * 10 * 32  # W^O
    )
    assert macs(g, "attn") == Sym({("B", "T"): per_token, ("B", "T", "T"): 4 * (14 + 10)})
    g = load_graph(mla_text(f"{DIMS}, rope: {{}}", x="[2, 5, 32]"))
    direct = 32 * 4 * 14 + 32 * 22 + 16 + 16 * 72 + 40 * 32
    assert macs(g, "attn") == 10 * direct + 50 * 4 * 24


def test_deepseek_v3_sizes_build_on_meta_without_allocating() -> None:
    """DeepSeek-V3's attention (hidden 7168, 128 heads, q/kv ranks 1536/512, 128 + 64 q/k
    dims, 128 value dims): its parameter count per layer, and a cache of 512 + 64 per token."""
    text = mla_text(
        "num_heads: 128, q_lora_rank: 1536, kv_lora_rank: 512, qk_nope_head_dim: 128, "
        "qk_rope_head_dim: 64, v_head_dim: 128, causal: true, "
        "rope: {interleaved: true, max_len: 4096}",
        x="[B, T, 7168]",
    )
    gm = compile_for_test(load_graph(text), device="meta")
    params = list(gm.parameters())
    assert params and all(p.is_meta for p in params)
    want = (
        7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 + 512 * 128 * 256 + 128**2 * 7168
    )
    assert sum(p.numel() for p in params) == want == 187_107_328
    c_kv, k_pe = gm.attn.latent(torch.empty(1, 3, 7168, device="meta"))
    assert (c_kv.shape, k_pe.shape) == ((1, 3, 512), (1, 1, 3, 64))


def test_the_spec_format_example_checks_at_deepseek_v3_sizes() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "spec-format.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if OP in b]
    node = textwrap.dedent(block).strip().removeprefix("- ")
    g = load_graph(spec("x: [B, T, 7168]", f"- {node}", "{y: self_attn}"))
    sizes = declared(g, "self_attn").values()
    assert sum(math.prod(s) for s in sizes) == 187_107_328  # as the meta build above


# -- errors --------------------------------------------------------------------------------


def test_errors_are_located() -> None:
    x = "x: [B, 12, 32]"
    node = f"op: multi_head_latent_attention, {DIMS}"
    fails(
        x,
        node.replace("qk_rope_head_dim: 6", "qk_rope_head_dim: 5") + ", rope: {}",
        "qk_rope_head_dim 5 is odd: RoPE rotates pairs of dims",
        "5",
    )
    fails(
        x,
        f"{node}, rope: {{max_len: 8}}",
        "the sequence length 12 exceeds the rotary max_len 8",
        "{max_len",
    )
    fails(
        x,
        f"{node}, rope: {{rotary_dim: 8}}",
        "rotary_dim 8 must be even and at most the head dim 6",
        "{rotary_dim",
    )
    fails(
        "x: [12, 32]",
        f"{node}, rope: {{}}",
        "x must be [B, T, E] (batch first), found [12, 32]",
        OP,
    )
    fails(
        "x: {shape: [B, T], dtype: int64}",
        f"{node}, rope: {{}}",
        "multi_head_latent_attention needs a floating-point input, found int64",
        OP,
    )


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (
            "[B, 1, T, 5]",
            "mask [B, 1, T, 5] does not broadcast to the scores [B, h, T, T] = [B, 4, T, T]",
        ),
        (
            "{shape: [B, 1, 1, T], dtype: int64}",
            "mask must be bool (True = take part) or float32 like the query (added to the "
            "scores), found int64",
        ),
    ],
)
def test_mask_errors(mask: str, message: str) -> None:
    text = mla_text(f"{DIMS}, rope: {{}}", mask=mask)
    assert errors_of(text) == [message]


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (DIMS, "rope"),  # the decoupled head needs its rotary options
        (f"{DIMS}, rope: {{}}, q_lora_rnk: 4", "q_lora_rnk"),
        (f"{DIMS}, rope: {{}}, q_lora_rank: 0", "q_lora_rank"),
    ],
)
def test_schema_errors_name_the_argument(args: str, word: str) -> None:
    messages = errors_of(mla_text(args))
    assert len(messages) == 1 and word in messages[0], messages


# -- against transformers' DeepseekV3Attention ---------------------------------------------------


def deepseek_case(
    args: str, q_lora_rank: int | None, interleave: bool, bias: bool = False, version: int = 3
) -> tuple[Any, Any, Any]:
    """transformers' DeepSeek-V3 (or V2) attention, eager, with every weight re-drawn; its
    rotary tables (V2's complex ones rotate interleaved pairs); and the spec's model."""
    import importlib

    name = f"DeepseekV{version}"
    mod = importlib.import_module(
        f"transformers.models.deepseek_v{version}.modeling_deepseek_v{version}"
    )
    layout = {"rope_interleave": interleave} if version == 3 else {}
    config = hf_config(
        name,
        **HF_DIMS,
        **layout,
        q_lora_rank=q_lora_rank,
        attention_bias=bias,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=64,
        num_hidden_layers=1,
    )
    hf = getattr(mod, f"{name}Attention")(config, layer_idx=0)
    redraw(hf, seed=1)
    rotary = getattr(mod, f"{name}RotaryEmbedding")(config)  # as the model builds its tables
    _, gm = compile_spec(mla_text(args, mask="{shape: [B, 1, 1, T], dtype: bool}"))
    return hf, rotary, gm


def hf_forward(hf: Any, rotary: Any, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The reference with the causal mask and the padding ``keep`` (B, 1, 1, T) as the model's
    additive mask."""
    n = x.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    mask = additive(causal) + torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    return hf(x, position_embeddings=rotary(x, torch.arange(n)[None]), attention_mask=mask)[0]


def rope_args(interleave: bool) -> str:
    return f"rope: {{interleaved: {str(interleave).lower()}, max_len: 64}}"


CASES = {
    # (q_lora_rank, rope_interleave, attention_bias, extra spec args)
    "q-latent-interleaved": (12, True, False, ""),
    "q-latent-rotate-half": (12, False, False, ""),
    "q-proj-interleaved": (None, True, False, ""),
    "q-proj-rotate-half-bias": (None, False, True, "bias: true"),
    "q-latent-bias": (12, True, True, "bias: true"),
}


def case_args(q_lora_rank: int | None, interleave: bool, extra: str) -> str:
    q = f"q_lora_rank: {q_lora_rank}, " if q_lora_rank is not None else ""
    more = f", {extra}" if extra else ""
    return f"{DIMS}, {q}causal: true, {rope_args(interleave)}{more}"


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(2))
    keep = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    keep[1, ..., -3:] = False  # trailing padding of the second sequence
    return x, keep


def check_deepseek(hf: Any, rotary: Any, gm: Any) -> None:
    """Forward and gradients (of x and every weight, DeepSeek's names on both sides)."""
    x, keep = inputs()

    def reference(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return hf_forward(hf, rotary, x, keep)

    check_equivalent(gm, reference, (x, keep), hf_names(gm, hf, {}))


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_deepseek_v3_attention_forward_and_gradients(case: str) -> None:
    q_lora_rank, interleave, bias, extra = CASES[case]
    hf, rotary, gm = deepseek_case(
        case_args(q_lora_rank, interleave, extra), q_lora_rank, interleave, bias
    )
    check_deepseek(hf, rotary, gm)


@pytest.mark.parametrize("q_lora_rank", [None, 12], ids=["v2-lite-q-proj", "v2-q-latent"])
def test_matches_deepseek_v2_attention_with_complex_rope(q_lora_rank: int | None) -> None:
    """DeepSeek-V2's attention rotates (x_2i, x_2i+1) as complex numbers: interleaved RoPE."""
    args = case_args(q_lora_rank, True, "bias: true")
    hf, rotary, gm = deepseek_case(args, q_lora_rank, True, bias=True, version=2)
    check_deepseek(hf, rotary, gm)


def test_scale_matches_a_yarn_softmax_scale() -> None:
    """DeepSeek-V3 with YaRN scales the scores by mscale^2 / sqrt(d_nope + d_rope); ``scale``
    carries it (YaRN's rotary tables themselves are RotaryArgs.scaling's, pending)."""
    mscale = 0.1 * 1.0 * torch.log(torch.tensor(40.0)).item() + 1.0
    scale = 14**-0.5 * mscale**2
    hf, rotary, gm = deepseek_case(case_args(12, True, f"scale: {scale!r}"), 12, True)
    hf.scaling = scale
    check_deepseek(hf, rotary, gm)


@pytest.mark.parametrize(
    ("scaling", "scale", "want"),
    [
        (None, None, None),  # the module's default, 1/sqrt(d_nope + d_rope)
        ({"type": "yarn", "factor": 40.0, "original_max_len": 8}, None, None),  # no mscale_all_dim
        ({"type": "yarn", "factor": 40.0, "original_max_len": 8, "mscale_all_dim": 1.0}, None,
         14**-0.5 * (0.1 * math.log(40.0) + 1) ** 2),  # DeepSeek-V3's
        ({"type": "yarn", "factor": 1.0, "original_max_len": 8, "mscale_all_dim": 1.0}, None,
         14**-0.5),  # m(1, k) = 1: the plain RoPE's scale
        ({"type": "yarn", "factor": 40.0, "original_max_len": 8, "mscale_all_dim": 1.0}, 0.5,
         0.5),  # given: kept
        ({"type": "linear", "factor": 4.0}, None, None),
    ],
)  # fmt: skip
def test_yarn_softmax_scale_is_derived_from_rope_scaling(
    scaling: dict[str, Any] | None, scale: float | None, want: float | None
) -> None:
    """With YaRN RoPE that gives mscale_all_dim, the op's scale is transformers'
    yarn_apply_mscale of the default one, unless ``scale`` is written."""
    from archcomp.ops.latent_attention import MultiHeadLatentAttentionArgs, latent_scale

    rope: dict[str, Any] = {"max_len": 16, "interleaved": True}
    if scaling is not None:
        rope["scaling"] = scaling
    args = MultiHeadLatentAttentionArgs(
        num_heads=2, kv_lora_rank=4, qk_nope_head_dim=8, qk_rope_head_dim=6, v_head_dim=4,
        rope=rope, scale=scale,
    )  # fmt: skip
    got = latent_scale(args)
    assert got == pytest.approx(want) if want is not None else got is None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("interleaved: true", "interleaved: false"),  # the other RoPE layout
        ("max_len: 64}", "max_len: 64, theta: 20000.0}"),  # another frequency base
        ("causal: true", "causal: false"),  # future keys visible
        ("q_lora_rank: 12, ", "q_lora_rank: 12, norm_eps: 0.5, "),  # the latent norms' eps
        ("q_lora_rank: 12, ", f"q_lora_rank: 12, scale: {16**-0.5!r}, "),  # 1/sqrt(d_nope+v)
    ],
)
def test_deepseek_equivalence_catches_planted_bugs(old: str, new: str) -> None:
    args = case_args(12, True, "")
    assert old in args
    hf, rotary, gm = deepseek_case(args.replace(old, new), 12, True)
    with pytest.raises(AssertionError, match="output"):
        check_deepseek(hf, rotary, gm)


@pytest.mark.parametrize("interleave", [False, True], ids=["rotate-half", "interleaved"])
def test_latent_is_what_transformers_caches(interleave: bool) -> None:
    """A KV cache of MLA holds the normed latent c^KV and the rotated shared key: exactly what
    transformers' cache receives (its interleaved key de-interleaved: even dims, then odd)."""
    from transformers import DynamicCache

    hf, rotary, gm = deepseek_case(case_args(12, interleave, ""), 12, interleave)
    gm.attn.load_state_dict(hf.state_dict())
    x, _ = inputs()
    cache = DynamicCache(config=hf.config)
    with torch.no_grad():
        hf_forward_cached(hf, rotary, x, cache)
        c_kv, k_pe = gm.attn.latent(x)  # (B, T, 16), (B, 1, T, 6)
    layer: Any = cache.layers[0]  # a DynamicLayer: keys, values
    order = [0, 2, 4, 1, 3, 5] if interleave else list(range(6))
    assert_same(layer.keys, c_kv[:, None])  # the same kernels: bitwise
    assert_same(layer.values, k_pe[..., order])


def hf_forward_cached(hf: Any, rotary: Any, x: torch.Tensor, cache: Any) -> None:
    n = x.shape[1]
    cos_sin = rotary(x, torch.arange(n)[None])
    hf(x, position_embeddings=cos_sin, attention_mask=None, cache=cache)


def test_compiles_fullgraph_exports_and_emits(tmp_path: Any) -> None:
    from equivalence import check_compile_export_emit

    _, gm = compile_spec(
        mla_text(case_args(12, True, "bias: true"), mask="{shape: [B, 1, 1, T], dtype: bool}")
    )
    x, keep = inputs()
    check_compile_export_emit(gm, (x, keep), tmp_path)


def test_dropout_only_in_training() -> None:
    _, gm = compile_spec(mla_text(f"{DIMS}, causal: true, dropout: 0.5, rope: {{}}"))
    x = torch.randn(2, 7, 32)
    gm.eval()
    assert_same(gm(x), gm(x))
    gm.train()
    torch.manual_seed(0)
    first = gm(x)
    assert not torch.equal(first, gm(x))
    torch.manual_seed(0)
    assert_same(gm(x), first)  # the same draws: the same weights dropped


def test_expanded_drawing_is_deepseek_v2_figure_3() -> None:
    from archcomp.backends.graphviz import DrawOptions, plan

    g = load_graph(mla_text(case_args(12, True, ""), mask="{shape: [B, 1, 1, T], dtype: bool}"))
    d = plan(g, DrawOptions(expand=("multi_head_latent_attention",)))
    inside = {b.id.removeprefix("attn/"): b.label for b in d.boxes.values() if "attn/" in b.id}
    assert inside["kv_a_layernorm"] == "RMSNorm (latent c^KV)"
    assert inside["rope_k"] == "RoPE (shared key)"
    assert len(inside) == 13
    edges = {(e.src, e.dst) for e in d.edges}
    assert {
        ("input/x", "attn/hidden"),
        ("attn/hidden", "attn/q_a_proj"),
        ("attn/hidden", "attn/kv_a_proj_with_mqa"),
        ("attn/kv_b_proj", "attn/attention"),  # the values
        ("attn/o_proj", "output/y"),
    } <= edges
    assert [f.label for f in d.frames.values() if f.kind == "stack"] == ["h× (h = 4)"]
