"""The zoo's specs (tests/specs/zoo/): attention variants of today's models, and a small
DeepSeek-V3 causal LM (latent attention, dense then mixture-of-experts layers), written with
archcomp's ops only (no mask or index table as an input, no attention rebuilt from matmuls),
each equal to the transformers module it replaces.

For each spec: the transformers module is built from a small random config, every weight is
re-drawn, the spec's compiled module takes them by name, and forward outputs and the
gradients of the input and of every weight are compared by the rule of tests/NUMERICS.md.
A planted bug per spec (an edit of its text) must fail the same comparison. Each spec also
checks, summarises and draws from the command line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from lowering import additive, check_equivalent, hf_config, redraw
from torch import nn

import archcomp
from archcomp.backends.torch.module import ArchModule
from archcomp.cli import main

ZOO = Path(__file__).resolve().parent / "specs" / "zoo"
SPECS = sorted(p.stem for p in ZOO.glob("*.yaml"))
ROPE = {"rope_type": "default", "rope_theta": 10000.0}
DECODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "rope_parameters": ROPE,
    "max_position_embeddings": 64,
    "num_hidden_layers": 1,
    "attention_bias": False,
}


@dataclass
class Reference:
    """A transformers module, how to call it, its inputs, and how its weights are named."""

    module: nn.Module
    forward: Callable[..., torch.Tensor]
    inputs: tuple[torch.Tensor, ...]
    rename: dict[str, str] = field(default_factory=dict)  # spec name piece -> transformers'
    params: dict[str, Any] = field(default_factory=dict)  # overrides of the spec's params
    buffers: str = ""  # a name ending of the reference buffers re-drawn and copied by name


def allowed(n: int, mask_function: Callable[..., Any]) -> torch.Tensor:
    """(n, n) bool: transformers' own mask function (masking_utils) at every query, key."""
    q, kv = torch.arange(n)[:, None], torch.arange(n)[None, :]
    return torch.as_tensor(mask_function(0, 0, q, kv)).expand(n, n)


def inputs(*shape: int, seed: int) -> tuple[torch.Tensor, ...]:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)),)


def decoder_layer(name: str, **cfg: Any) -> Reference:
    """transformers' ``{name}DecoderLayer`` with RoPE and the causal mask, on [2, 9, 32]."""
    import importlib

    mod = importlib.import_module(f"transformers.models.{name.lower()}.modeling_{name.lower()}")
    config = hf_config(name, **DECODER, **cfg)
    layer = getattr(mod, f"{name}DecoderLayer")(config, layer_idx=0)
    rotary = getattr(mod, f"{name}RotaryEmbedding")(config)
    from transformers.masking_utils import causal_mask_function

    def forward(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        cos_sin = rotary(x, torch.arange(n)[None])
        mask = additive(allowed(n, causal_mask_function))
        out = layer(x, attention_mask=mask, position_embeddings=cos_sin)
        return out[0] if isinstance(out, tuple) else out

    return Reference(layer, forward, inputs(2, 9, 32, seed=2), {"out_proj": "o_proj"})


def qwen3() -> Reference:
    return decoder_layer("Qwen3", head_dim=12)


def olmo2() -> Reference:
    return decoder_layer("Olmo2")


def gemma2(sliding: bool, layer: bool = False) -> Reference:
    """A sliding layer (window 4) or a global one (Gemma 2 alternates them): its attention
    (Gemma2Attention) or the whole Gemma2DecoderLayer."""
    from transformers.masking_utils import causal_mask_function, sliding_window_causal_mask_function
    from transformers.models.gemma2 import modeling_gemma2 as gemma

    config = hf_config(
        "Gemma2",
        **DECODER,
        head_dim=16,
        query_pre_attn_scalar=20,
        attn_logit_softcapping=2.0,
        sliding_window=4,
        layer_types=["sliding_attention" if sliding else "full_attention"],
        hidden_activation="gelu_pytorch_tanh",
    )
    module: nn.Module
    if layer:
        module = gemma.Gemma2DecoderLayer(config, layer_idx=0)
    else:
        module = gemma.Gemma2Attention(config, layer_idx=0)
    rotary = gemma.Gemma2RotaryEmbedding(config)
    rule = sliding_window_causal_mask_function(4) if sliding else causal_mask_function

    def forward(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        cos_sin = rotary(x, torch.arange(n)[None])
        out = module(x, position_embeddings=cos_sin, attention_mask=additive(allowed(n, rule)))
        return out[0] if isinstance(out, tuple) else out

    # 9 positions: the window of 4 hides keys from the fifth query on
    rename = {"out_proj": "o_proj"} if layer else {"self_attn.": "", "out_proj": "o_proj"}
    return Reference(
        module, forward, inputs(2, 9, 32, seed=2), rename, {"window": 4 if sliding else 0}
    )


def t5(decoder: bool) -> Reference:
    from transformers.masking_utils import causal_mask_function
    from transformers.models.t5.modeling_t5 import T5LayerSelfAttention

    config = hf_config(
        "T5",
        d_model=32,
        d_kv=12,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=20,
        is_decoder=decoder,
    )
    layer = T5LayerSelfAttention(config, has_relative_attention_bias=True, layer_idx=0)
    n = 30  # distances past the exact buckets and past max_distance
    mask = additive(allowed(n, causal_mask_function)) if decoder else None

    def forward(x: torch.Tensor) -> torch.Tensor:
        return layer(x, attention_mask=mask)[0]

    rename = {
        "position_bias.": "SelfAttention.",
        "q_proj": "q",
        "k_proj": "k",
        "v_proj": "v",
        "out_proj": "o",
    }
    return Reference(layer, forward, inputs(2, n, 32, seed=9), rename, {"decoder": decoder})


def swin(shift: int) -> Reference:
    from transformers.models.swin.modeling_swin import SwinLayer

    config = hf_config(
        "Swin", embed_dim=32, window_size=3, mlp_ratio=2.0, qkv_bias=True, layer_norm_eps=1e-5
    )
    layer = SwinLayer(config, dim=32, input_resolution=(6, 6), num_heads=4, shift_size=shift)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return layer(x, (6, 6))[0]

    rename = {"relative_position_bias.": "attention.relative_position_bias.", "out_proj": "o_proj"}
    # a batch of 3 maps: the shift mask repeats for each image's 4 windows
    return Reference(layer, forward, inputs(3, 36, 32, seed=11), rename, {"shift": shift})


def bart() -> Reference:
    from transformers.models.bart.modeling_bart import BartEncoder

    config = hf_config(
        "Bart",
        vocab_size=50,
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=64,
        max_position_embeddings=16,
        pad_token_id=1,
    )
    encoder = BartEncoder(config)
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(5))
    ids[:, -2:] = 1  # padding ids: their embedding row gets no gradient on either side

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        return encoder(input_ids=input_ids).last_hidden_state

    return Reference(encoder, forward, (ids,))


YARN = {"factor": 4.0, "original_max_position_embeddings": 16, "mscale": 1.0, "mscale_all_dim": 0.8}


def deepseek_v3(yarn: bool = False) -> Reference:
    """DeepseekV3ForCausalLM: one dense layer, then two MoE layers (sigmoid scores, 2 of 4
    groups, correction bias, renormalized weights times 2.5, a shared expert), latent
    attention with interleaved RoPE (default, or YaRN as ``YARN`` says); logits of 2 x 11
    token ids (2 x 40 with YaRN: past its original 16 positions)."""
    from transformers import DeepseekV3ForCausalLM

    config = hf_config(
        "DeepseekV3",
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        first_k_dense_replace=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=12,
        kv_lora_rank=16,
        qk_nope_head_dim=8,
        qk_rope_head_dim=6,
        v_head_dim=10,
        rope_interleave=True,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        n_shared_experts=1,
        rms_norm_eps=1e-6,
        rope_parameters={**ROPE, "rope_type": "yarn", **YARN} if yarn else ROPE,
        max_position_embeddings=64,
        attention_bias=False,
        tie_word_embeddings=False,
    )
    model = DeepseekV3ForCausalLM(config)
    ids = torch.randint(0, 50, (2, 40 if yarn else 11), generator=torch.Generator().manual_seed(12))

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids).logits

    # dense_layers.i is model.layers.i, moe_layers.j is model.layers.(1 + j)
    rename = {
        "dense_layers.0.": "layers.0.",
        "moe_layers.0.": "layers.1.",
        "moe_layers.1.": "layers.2.",
    }
    return Reference(model, forward, (ids,), rename, buffers="e_score_correction_bias")


CASES: dict[str, tuple[str, Callable[[], Reference]]] = {
    "qwen3": ("qwen3_decoder_layer", qwen3),
    "olmo2": ("olmo2_decoder_layer", olmo2),
    "gemma2": ("gemma2_sliding_attention", lambda: gemma2(sliding=True)),
    "gemma2-global": ("gemma2_sliding_attention", lambda: gemma2(sliding=False)),
    "gemma2-layer": ("gemma2_decoder_layer", lambda: gemma2(sliding=True, layer=True)),
    "gemma2-layer-global": ("gemma2_decoder_layer", lambda: gemma2(sliding=False, layer=True)),
    "t5-encoder": ("t5_layer_self_attention", lambda: t5(decoder=False)),
    "t5-decoder": ("t5_layer_self_attention", lambda: t5(decoder=True)),
    "swin": ("swin_shifted_window_layer", lambda: swin(shift=1)),
    # no shift: every window lies in one region, the mask is all 0 (W-MSA, which has none)
    "swin-unshifted": ("swin_shifted_window_layer", lambda: swin(shift=0)),
    "bart": ("bart_encoder", bart),
    "deepseek-v3": ("deepseek_v3", deepseek_v3),
}


def by_name(model: ArchModule, ref: nn.Module, rename: dict[str, str]) -> dict[str, torch.Tensor]:
    """Each of the compiled model's parameters -> the reference's of the same name, once the
    pieces in ``rename`` are replaced; every reference parameter is taken exactly once."""
    theirs = dict(ref.named_parameters())
    pairs: dict[str, torch.Tensor] = {}
    for name, _ in model.named_parameters():
        key = name
        for a, b in rename.items():
            key = key.replace(a, b)
        assert key in theirs, f"{name} -> {key}: not a parameter of the reference"
        pairs[name] = theirs.pop(key)
    assert not theirs, f"reference parameters left unmapped: {sorted(theirs)}"
    return pairs


def copy_buffers(model: ArchModule, ref: Reference) -> None:
    """The reference buffers named ``*{ref.buffers}`` re-drawn ~ N(0, 0.1) and copied into the
    model's of the same name (by ``ref.rename``); each is taken exactly once."""
    gen = torch.Generator().manual_seed(2)
    theirs = {n: b for n, b in ref.module.named_buffers() if n.endswith(ref.buffers)}
    with torch.no_grad():
        for b in theirs.values():
            b.copy_(0.1 * torch.randn(b.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith(ref.buffers):
                key = name
                for x, y in ref.rename.items():
                    key = key.replace(x, y)
                b.copy_(theirs.pop(key))
    assert not theirs, f"reference buffers left unmapped: {sorted(theirs)}"


def compare(case: str, text: str, make: Callable[[], Reference] | None = None) -> None:
    """The spec ``text`` of ``case`` (or ``make``'s reference) against its transformers
    module, by check_equivalent."""
    ref = (make or CASES[case][1])()
    model = archcomp.build(text, params=ref.params)
    redraw(ref.module, seed=1)
    if ref.buffers:
        copy_buffers(model, ref)
    model.eval()  # dropout off on both sides
    ref.module.eval()
    check_equivalent(model, ref.forward, ref.inputs, by_name(model, ref.module, ref.rename))


def read(spec: str) -> str:
    return (ZOO / f"{spec}.yaml").read_text()


def test_every_zoo_spec_has_a_case() -> None:
    assert sorted({spec for spec, _ in CASES.values()}) == SPECS


@pytest.mark.parametrize("case", sorted(CASES))
def test_zoo_spec_equals_transformers(case: str) -> None:
    compare(case, read(CASES[case][0]))


PLANTED = [
    # the first residual around the norm's output, not the layer's input
    ("qwen3", "{id: res_1, op: add, in: [x, self_attn]}", "{id: res_1, op: add, in: "
     "[input_layernorm, self_attn]}"),
    # the MLP reads the layer's input, not the attention's residual
    ("olmo2", "{id: mlp, op: swiglu,", "{id: mlp, op: swiglu, in: x,"),
    # scores scaled by 1/sqrt(head_dim), not 1/sqrt(query_pre_attn_scalar)
    ("gemma2", 'scale: "${query_pre_attn_scalar ** -0.5}", ', ""),
    # a window one key wider
    ("gemma2", 'window: "${window}"', 'window: "${window + 1}"'),
    # Llama's gain w, not Gemma's (1 + w), after the MLP
    ("gemma2-layer", '{id: post_feedforward_layernorm, op: rms_norm, eps: "${eps}", offset: 1}',
     '{id: post_feedforward_layernorm, op: rms_norm, eps: "${eps}"}'),
    # the second residual around the pre-norm's output, not h
    ("gemma2-layer-global", "in: [res_1, post_feedforward_layernorm]",
     "in: [pre_feedforward_layernorm, post_feedforward_layernorm]"),
    # exact GELU, not gelu_pytorch_tanh
    ("gemma2-layer", "approximate: tanh", "approximate: none"),
    # T5's scores are not scaled
    ("t5-encoder", "scale: 1.0, ", ""),
    # the decoder's buckets two-sided
    ("t5-decoder", 'bidirectional: "${not decoder}"', "bidirectional: true"),
    # the shift mask lost
    ("swin", "factor: -100.0", "factor: 0.0"),
    # rolled the wrong way
    ("swin", 'shifts: ["${-shift}", "${-shift}"]', 'shifts: ["${shift}", "${shift}"]'),
    # BART's positions without the offset (the same table, read from row 0)
    ("bart", 'max_len: "${max_len}", offset: 2}', 'max_len: "${max_len + 2}", offset: 0}'),
    # routing from the best 1 of 4 expert groups, not 2 (topk_group)
    ("deepseek-v3", 'top_groups: "${topk_group}"', 'top_groups: "${topk_group - 1}"'),
    # the top-k weights not renormalized (norm_topk_prob off)
    ("deepseek-v3", 'renormalize: "${norm_topk_prob}"', "renormalize: false"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "old", "new"), PLANTED)
def test_zoo_planted_bug_fails(case: str, old: str, new: str) -> None:
    text = read(CASES[case][0])
    assert text.count(old) == 1, old
    with pytest.raises(AssertionError, match="output"):
        compare(case, text.replace(old, new))


def yarn_text(scale: float | None = None) -> str:
    """The DeepSeek-V3 spec with YaRN RoPE (DeepSeek-V3's rope_scaling, at small sizes); the
    op derives the softmax scale it implies, (d_nope + d_rope)^-1/2 * m(factor,
    mscale_all_dim)^2, m(s, k) = 0.1 k ln(s) + 1, unless ``scale`` is written."""
    rope = 'max_len: "${context}"}'
    yarn = (
        f'max_len: "${{context}}", scaling: {{type: yarn, factor: {YARN["factor"]}, '
        f"original_max_len: {YARN['original_max_position_embeddings']}, "
        f"mscale: {YARN['mscale']}, mscale_all_dim: {YARN['mscale_all_dim']}}}}}"
    )
    text = read("deepseek_v3")
    assert text.count(rope) == 2 and text.count("causal: true,") == 2
    text = text.replace(rope, yarn)
    return (
        text if scale is None else text.replace("causal: true,", f"causal: true, scale: {scale!r},")
    )


def test_deepseek_v3_with_yarn_equals_transformers() -> None:
    compare("", yarn_text(), lambda: deepseek_v3(yarn=True))


def test_deepseek_v3_yarn_without_its_softmax_scale_fails() -> None:
    """A planted bug: YaRN's tables but the default score scale, written out."""
    text = yarn_text(scale=(8 + 6) ** -0.5)
    with pytest.raises(AssertionError, match="output"):
        compare("", text, lambda: deepseek_v3(yarn=True))


@pytest.mark.parametrize("spec", SPECS)
def test_zoo_spec_checks_summarises_and_draws(
    spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(ZOO / f"{spec}.yaml")
    assert main(["check", path]) == 0
    assert main(["summary", path]) == 0
    dot = tmp_path / f"{spec}.dot"
    assert main(["draw", path, "--format", "dot", "-o", str(dot)]) == 0
    assert dot.read_text().startswith(f"digraph {spec} {{")
    assert "error" not in capsys.readouterr().err


def test_swin_shift_mask_is_transformers() -> None:
    """The spec's mask, read out of the compiled graph, is get_attn_mask's for each image."""
    from transformers.models.swin.modeling_swin import SwinLayer

    config = hf_config("Swin", embed_dim=32, window_size=3)
    layer = SwinLayer(config, dim=32, input_resolution=(6, 6), num_heads=4, shift_size=1)
    want = layer.get_attn_mask(6, 6, dtype=torch.float32, device=torch.device("cpu"))
    assert want is not None
    text = read("swin_shifted_window_layer").replace(
        "outputs: {hidden_states: res_2}", "outputs: {hidden_states: res_2, mask: attn_mask}"
    )
    model = archcomp.build(text)
    out = model(torch.zeros(2, 36, 32))
    assert isinstance(out, dict)
    got = out["mask"]
    assert got.shape == (2 * 4, 1, 9, 9)
    assert torch.equal(got[:, 0], want.repeat(2, 1, 1))
    assert math.isclose(float(got.min()), -100.0)
