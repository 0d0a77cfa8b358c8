"""`archcomp import --hf` of the decoder and encoder families beyond Llama's (GPT-2, ...): each
from a small random config with every weight re-drawn (tests/lowering.py), saved with
save_pretrained, imported, built, and compared with transformers to tests/NUMERICS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import Case, check_case
from import_decoders import LLAMA_LIKE, VOCAB, deepseek, saved
from numerics import RoundingChains, assert_close

import archcomp
from archcomp.cli.main import main
from archcomp.importer import ImportFailure
from archcomp.importer.hf import import_hf

transformers = pytest.importorskip("transformers")


def ids(t: int = 9) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, t), generator=torch.Generator().manual_seed(1))


def logits_equal(model: Any, ref: Any, **inputs: torch.Tensor) -> None:
    inputs = inputs or {"input_ids": ids()}
    model.eval()  # dropout off, as in ref
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(**inputs), ref(**inputs).logits
    got = got["logits"] if isinstance(got, dict) else got
    assert_close(got, want, chains.tolerance(torch.float32, got, want))


def gradients_equal(text: str, ref: Any) -> None:
    """The built spec with transformers' own state_dict (strictly, no mapping): logits and
    every parameter's gradient equal."""
    model = archcomp.build(text)
    model.load_state_dict(ref.state_dict(), strict=True)
    model.eval()
    ref.eval()
    case = Case(
        model,
        ref,
        (ids(),),
        lambda x: [ref(input_ids=x).logits],
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)


GPT2 = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=16)


def test_gpt2_round_trip_from_the_cli(tmp_path: Path) -> None:
    """Conv1D as linear/attention with transposed weights, NewGELU as tanh GELU, wpe looked up
    at arange(T) inside the forward as learned_positional_encoding, the tied head."""
    ref, folder = saved(tmp_path, "GPT2Config", "GPT2LMHeadModel", **GPT2)
    spec, art = tmp_path / "gpt2.yaml", tmp_path / "gpt2.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    assert (
        '- {id: attn, op: multi_head_attention, num_heads: "${num_attention_heads}", causal: '
        "true,\n         dropout: 0.1, out_name: c_proj, qkv_name: c_attn, transposed: true}"
    ) in text
    wpe = '- {id: wpe, op: learned_positional_encoding, max_len: "${max_position_embeddings}"}'
    assert wpe in text
    assert "{id: act, op: gelu, approximate: tanh}" in text
    assert "reshape" not in text  # GPT-2's view(-1, T) of its input is no node
    logits_equal(archcomp.load(art), ref)
    gradients_equal(text, ref)


def test_gpt2_layer_scaled_scores_are_refused(tmp_path: Path) -> None:
    _, folder = saved(
        tmp_path, "GPT2Config", "GPT2LMHeadModel", scale_attn_by_inverse_layer_idx=True, **GPT2
    )
    with pytest.raises(ImportFailure, match="scale_attn_by_inverse_layer_idx"):
        import_hf(folder)


def test_attention_without_output_projection_by_its_projection_names() -> None:
    """multi_head_attention with q_name/k_name/v_name and out_proj: false (BERT's layout):
    the merged heads of F.scaled_dot_product_attention, by hand with the same weights."""
    text = """
archcomp: 1
name: t
inputs: {x: {shape: [2, 5, 8]}}
nodes:
  - {id: attn, op: multi_head_attention, num_heads: 2, q_name: query, k_name: key,
     v_name: value, out_proj: false}
outputs: {out: attn}
"""
    model = archcomp.build(text).eval()
    assert sorted(model.state_dict()) == [
        f"attn.{p}.{w}" for p in ("key", "query", "value") for w in ("bias", "weight")
    ]
    x = torch.randn(2, 5, 8)
    a = model.attn
    q, k, v = (getattr(a, p)(x).view(2, 5, 2, 4).transpose(1, 2) for p in ("query", "key", "value"))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    with torch.no_grad(), RoundingChains() as chains:
        got = model(x)
    assert_close(got, want.detach(), chains.tolerance(torch.float32, got, want))


def test_gemma2_round_trip(tmp_path: Path) -> None:
    """Scaled embedding, (1 + w) RMSNorms around both sublayers, the eager attention's scale and
    soft cap, the logits' soft cap, and sliding/global layers as one block whose window is a
    param, repeated with ``window: "${[4, 0][index % 2]}"``."""
    ref, folder = saved(
        tmp_path, "Gemma2Config", "Gemma2ForCausalLM", num_hidden_layers=4, sliding_window=4,
        **LLAMA_LIKE,
    )  # fmt: skip
    spec, art = tmp_path / "gemma2.yaml", tmp_path / "gemma2.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    assert 'window: "${[4, 0][index % 2]}"' in text and "gemma2_decoder_layer_2" not in text
    assert 'window: "${window}"' in text and "softcap: 50.0" in text and "scale: true" in text
    assert text.count("offset: 1.0") == 5  # four per layer and the final norm
    assert "{id: tanh, op: tanh}" in text  # the logits' cap: div, tanh, mul
    deeper = archcomp.build(text, params={"num_hidden_layers": 6}, device="meta")
    assert [deeper.model.layers[i].self_attn.window for i in (4, 5)] == [4, 0]
    logits_equal(archcomp.load(art), ref)
    gradients_equal(text, ref)


def test_gemma3_text_round_trip(tmp_path: Path) -> None:
    """Per-head (1 + w) q/k norms, and sliding and full layers that differ in window, RoPE base
    and RoPE scaling (linear on the full layers): one block, its per-copy values indexed."""
    rope = {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
    }
    ref, folder = saved(
        tmp_path, "Gemma3TextConfig", "Gemma3ForCausalLM", num_hidden_layers=4, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"] * 2, rope_parameters=rope,
        **LLAMA_LIKE,
    )  # fmt: skip
    text = import_hf(folder)
    assert 'qk_norm: {kind: rms, eps: "${rms_norm_eps}", offset: 1.0}' in text
    assert 'scaling: {type: linear, factor: "${rope_scaling_factor}"}' in text
    assert 'rope_scaling_factor: "${[1.0, 8.0][index % 2]}"' in text
    assert 'self_attn_rope_theta: "${[10000.0, 1000000.0][index % 2]}"' in text
    logits_equal(archcomp.from_pretrained(folder, text), ref)
    gradients_equal(text, ref)


@pytest.mark.parametrize(
    ("rope", "shows"),
    [
        (
            {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
             "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
            "scaling: {type: llama3, factor: 8.0, original_max_len: 8, low_freq_factor: 1.0,",
        ),
        ({"rope_type": "linear", "factor": 4.0}, "scaling: {type: linear, factor: 4.0}"),
        (
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
            "scaling: {type: yarn, factor: 4.0, original_max_len: 8",
        ),
    ],
)  # fmt: skip
def test_scaled_rope_round_trip(tmp_path: Path, rope: dict[str, Any], shows: str) -> None:
    """Llama with rope_parameters of rope_type llama3, linear or yarn: rope.scaling."""
    fields = {**LLAMA_LIKE, "num_hidden_layers": 1, "max_position_embeddings": 32}
    fields.pop("head_dim")
    ref, folder = saved(
        tmp_path, "LlamaConfig", "LlamaForCausalLM", rope_parameters={"rope_theta": 5e5, **rope},
        **fields,
    )  # fmt: skip
    text = import_hf(folder)
    assert shows in text
    logits_equal(archcomp.from_pretrained(folder, text), ref, input_ids=ids(20))


def test_mixtral_round_trip_from_the_cli(tmp_path: Path) -> None:
    """The sparse MoE block (router, top-2 of 4 SwiGLU experts, renormalised) as one
    mixture_of_experts whose tensors are transformers' own (gate.weight,
    experts.gate_up_proj, experts.down_proj): transformers' state_dict loads strictly, logits
    and gradients equal. The saved folder holds the experts one by one in the legacy layout
    (block_sparse_moe.experts.i.w1, w3, w2); convert --spec stacks them as transformers' own
    conversion for the class does (w1 and w3 stacked over the experts, then concatenated)."""
    ref, folder = saved(
        tmp_path, "MixtralConfig", "MixtralForCausalLM", num_hidden_layers=2,
        num_local_experts=4, num_experts_per_tok=2, **{**LLAMA_LIKE, "head_dim": None},
    )  # fmt: skip
    spec, art = tmp_path / "mixtral.yaml", tmp_path / "mixtral.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    assert (
        '- {id: mlp, op: mixture_of_experts, num_experts: "${num_local_experts}",\n'
        '         top_k: "${num_experts_per_tok}", expert_features: "${intermediate_size}"}'
    ) in text
    logits_equal(archcomp.load(art), ref)
    gradients_equal(text, ref)


def test_experts_with_one_missing_are_not_stacked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder whose experts lack one (expert 3's w1 removed) is not stacked by guess:
    convert --spec of the imported spec exits 2 naming the per-expert keys the spec has no
    tensor for, then the shipped mapping's complaint; nothing is written."""
    from safetensors.torch import load_file, save_file

    _, folder = saved(
        tmp_path, "MixtralConfig", "MixtralForCausalLM", num_hidden_layers=1,
        num_local_experts=4, num_experts_per_tok=2, **{**LLAMA_LIKE, "head_dim": None},
    )  # fmt: skip
    spec, art = tmp_path / "mixtral.yaml", tmp_path / "mixtral.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    del tensors["model.layers.0.block_sparse_moe.experts.3.w1.weight"]
    save_file(tensors, weights, metadata={"format": "pt"})
    capsys.readouterr()
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 2
    err = capsys.readouterr().err
    assert "the spec's tensors are not the checkpoint's own keys" in err
    assert "'model.layers.0.block_sparse_moe.experts." in err and "Traceback" not in err
    assert not art.exists()


def test_gpt_neox_folder_converts_by_its_own_keys(tmp_path: Path) -> None:
    """save_pretrained writes GPT-NeoX's lm_head.weight as embed_out.weight (its legacy key);
    convert --spec reads it by transformers' own rename of it, the rest by name."""
    fields = {**LLAMA_LIKE, "num_hidden_layers": 2}
    for k in ("num_key_value_heads", "head_dim", "rms_norm_eps"):
        fields.pop(k)
    ref, folder = saved(tmp_path, "GPTNeoXConfig", "GPTNeoXForCausalLM", **fields)
    spec, art = tmp_path / "neox.yaml", tmp_path / "neox.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    logits_equal(archcomp.load(art), ref)


def test_deepseek_v3_round_trip_from_the_cli(tmp_path: Path) -> None:
    """Latent attention (the q latent, the joint kv latent, interleaved RoPE on the decoupled
    head, the shared key expanded) as multi_head_latent_attention; DeepSeekMoE (sigmoid scores
    plus the score-correction bias, group-limited top-k, renormalised and scaled, a shared
    expert) as mixture_of_experts; the dense first layer and the MoE layers one block whose
    ``mlp`` is either, by ``when``. The folder's experts, saved one by one, are stacked on
    loading: logits and every gradient equal to transformers'."""
    ref, folder = deepseek(tmp_path, num_hidden_layers=3, first_k_dense_replace=1)
    spec, art = tmp_path / "deepseek.yaml", tmp_path / "deepseek.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    assert (
        'rope: {theta: "${rope_theta}", max_len: "${max_position_embeddings}", interleaved: true}'
    ) in text
    for arg in ("scoring: sigmoid", 'num_groups: "${n_group}"', "score_correction_bias: true"):
        assert arg in text
    assert 'routed_scaling_factor: "${routed_scaling_factor}"' in text
    assert "shared_features: " in text and 'repeat: "${num_hidden_layers}"' in text
    assert '{id: mlp, op: deepseek_v3_mlp, when: "${index < 1}"' in text
    assert (
        '{id: mlp, op: mixture_of_experts, in: post_attention_layernorm, when: "${index >= 1}"'
        in text
    )
    deeper = archcomp.build(text, params={"num_hidden_layers": 5}, device="meta").model.layers
    assert hasattr(deeper[0].mlp, "gate_proj") and hasattr(deeper[4].mlp, "experts")
    logits_equal(archcomp.load(art), ref)
    gradients_equal(text, ref)


def test_deepseek_v3_yarn_rope(tmp_path: Path) -> None:
    """YaRN on the decoupled head: rope.scaling of rope_parameters, the cos/sin factor and the
    score scale (m(factor, mscale_all_dim)^2) derived by the op as transformers does; logits
    equal on 20 tokens, past the original context of 8."""
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}
    rope |= {"mscale": 1.0, "mscale_all_dim": 1.0, "rope_theta": 10000.0}
    ref, folder = deepseek(
        tmp_path, num_hidden_layers=2, first_k_dense_replace=1, rope_parameters=rope,
        max_position_embeddings=32,
    )  # fmt: skip
    text = import_hf(folder)
    assert "scaling: {type: yarn, factor: 4.0, original_max_len: 8," in text
    assert " scale: " not in text  # the op derives it
    logits_equal(archcomp.from_pretrained(folder, text), ref, input_ids=ids(20))


@pytest.mark.parametrize(
    ("fields", "shows"),
    [
        ({"rope_interleave": False}, "rope: {theta: "),  # rotate-half: no interleaved
        ({"q_lora_rank": None}, 'kv_lora_rank: "${kv_lora_rank}"'),  # one q_proj (V2-Lite)
        ({"attention_bias": True}, "bias: true"),  # q_a_proj, kv_a_proj_with_mqa, o_proj
    ],
)
def test_deepseek_v3_latent_attention_variants(
    tmp_path: Path, fields: dict[str, Any], shows: str
) -> None:
    """RoPE as rotate-half, the query without its latent, and attention_bias: logits equal."""
    ref, folder = deepseek(tmp_path, num_hidden_layers=1, first_k_dense_replace=0, **fields)
    text = import_hf(folder)
    attn = text[text.index("op: multi_head_latent_attention") :].split("\n      - ")[0]
    assert shows in attn
    assert ("interleaved: true" in attn) == fields.get("rope_interleave", True)
    assert ("q_lora_rank" in attn) == ("q_lora_rank" not in fields)
    logits_equal(archcomp.from_pretrained(folder, text), ref)


def test_deepseek_v3_attention_computing_more_is_refused_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A latent attention whose output is also doubled (a mul no RoPE table reads) is not the
    op: it is refused by name with the source line, never imported without the factor."""
    cls = transformers.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3Attention
    forward = cls.forward

    def doubled(self: Any, *args: Any, **kwargs: Any) -> Any:
        out, weights = forward(self, *args, **kwargs)
        return out * 2.0, weights

    _, folder = deepseek(tmp_path, num_hidden_layers=1, first_k_dense_replace=0)
    monkeypatch.setattr(cls, "forward", doubled)
    with pytest.raises(ImportFailure) as e:
        import_hf(folder)
    (problem,) = e.value.problems
    assert problem.startswith("DeepseekV3Attention self.model.layers.0.self_attn (latent ")
    assert "also computes aten.mul.Tensor at modeling_deepseek_v3.py:" in problem  # its caller
