"""The zoo's decoder families beyond what tests/test_checkpoints.py runs on every family (its
tests take tests/hf_zoo_decoders.py's FAMILIES with sdpa attention and untied heads):

- each spec's parameter count at its defaults (the published size) equals transformers' model
  of the same config built on the meta device, ties counted once, and tests/spec_library.py's;
- the variants a family's checkpoints come in: eager attention, the tied LM head of the
  small sizes (Llama 3.2 1B/3B, Qwen2.5 0.5B-3B, Qwen3 0.6B-4B), Qwen2's and Qwen3's sliding
  windows, Phi-3 without a window and with the 128K models' LongRoPE, Phi-4-mini (a
  partial rotary factor, LongRoPE, the tied head),
  GPT-NeoX rotating Pythia's quarter of each head; each loaded by from_pretrained
  with no spec and no mapping (outputs and the embedding's gradient equal transformers'), and
  exported back into transformers' from_pretrained (no missing or unexpected key, the same
  outputs).

Tolerances: the rule of tests/numerics.py, its rounding chains counted over both models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hf_models  # noqa: F401  (first: it imports the hf_zoo_* groups)
import hf_zoo_decoders as zoo
import numerics
import pytest
import torch
from hf_models import outputs, quiet
from numerics import RoundingChains
from spec_library import LIBRARY

import archcomp
from archcomp.backends.torch.module import ArchModule

pytest.importorskip("transformers")

# Llama 3.1's rope_parameters, at a small original context and with a band other than its
# (1, 4), so that a field read wrong shows: the 8-dim heads' wavelengths 2 pi theta^(2i/8) are
# 6.3 (below 512 / 4: kept), 167 (between: interpolated), 4440 and 118,000 (above 512 / 2:
# divided by factor)
LLAMA3 = {
    "rope_type": "llama3",
    "rope_theta": 5e5,
    "factor": 8.0,
    "low_freq_factor": 2.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 512,
}
# Phi-3-mini-128k's LongRoPE at a small scale: original context 8 of 32 (factor 4, cos and sin
# times sqrt(1 + ln 4 / ln 8)), a divisor per frequency, short and long apart in every entry
LONGROPE = {
    "rope_type": "longrope",
    "rope_theta": 1e4,
    "short_factor": [1.0, 1.3, 2.0, 3.5],
    "long_factor": [1.2, 2.5, 4.0, 9.0],
}
PHI3_128K = {
    "rope_parameters": LONGROPE,
    "max_position_embeddings": 32,
    "original_max_position_embeddings": 8,
}
# Phi-4-mini at a small scale: the first 3/4 of each 8-dim head rotate (6 dims, 3 pairs, so a
# wrong pairing or a rotated tail shows), LongRoPE over those pairs, the LM head tied
PARTIAL = {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.75}
PHI4_MINI = {
    **PHI3_128K,
    "rope_parameters": {
        **LONGROPE,
        "partial_rotary_factor": 0.75,
        "short_factor": [1.0, 1.7, 3.0],
        "long_factor": [1.4, 2.5, 6.0],
    },
    "tie_word_embeddings": True,
}
VARIANTS = [
    ("qwen2", {"attn_implementation": "eager", "tie_word_embeddings": True}),
    # the sliding window of the layers from max_window_layers on (4 keys of the 9 tokens)
    ("qwen2", {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}),
    (
        "qwen2",
        {
            "use_sliding_window": True,
            "sliding_window": 3,
            "max_window_layers": 0,
            "attn_implementation": "eager",
        },
    ),
    ("qwen3", {"attn_implementation": "eager", "tie_word_embeddings": True}),
    # Qwen3's sliding window, as Qwen2's: the second layer's 4 keys, both layers' 3 (eager)
    ("qwen3", {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}),
    (
        "qwen3",
        {
            "use_sliding_window": True,
            "sliding_window": 3,
            "max_window_layers": 0,
            "attn_implementation": "eager",
        },
    ),
    ("olmo2", {"attn_implementation": "eager"}),
    ("phi3", {"attn_implementation": "eager"}),
    ("phi3", {"sliding_window": None}),  # no window (Phi-3.5)
    # LongRoPE: the 9 tokens are past the original 8, so every position takes long_factor
    ("phi3", PHI3_128K),
    ("phi3", {**PHI3_128K, "sliding_window": None, "attn_implementation": "eager"}),
    # Phi-4-mini: RoPE on the first 3/4 of each head, with LongRoPE and the head tied; eager
    ("phi3", PHI4_MINI),
    ("phi3", {"rope_parameters": PARTIAL, "attn_implementation": "eager"}),
    ("gpt_neox", {"attn_implementation": "eager"}),
    ("gpt_neox", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}),  # Pythia's 1/4
    ("llama", {"tie_word_embeddings": True}),
    # Llama 3.1's scaled RoPE (untied, as 8B) and 3.2's (tied, as 1B and 3B), eager and sdpa;
    # the head's 4 frequencies fall one in each band: kept, interpolated, divided by factor
    ("llama", {"rope_parameters": LLAMA3, "max_position_embeddings": 1024}),
    (
        "llama",
        {
            "rope_parameters": {**LLAMA3, "factor": 32.0},
            "max_position_embeddings": 1024,
            "tie_word_embeddings": True,
            "attn_implementation": "eager",
        },
    ),
    ("llama", {"rope_parameters": {"rope_type": "linear", "rope_theta": 5e5, "factor": 4.0}}),
]


@pytest.mark.parametrize("name", sorted(zoo.FLAGSHIP))
def test_flagship_count_equals_transformers_on_meta(name: str) -> None:
    cfg = zoo.config(name, **zoo.FLAGSHIP[name])
    with torch.device("meta"):
        hf = zoo.transformers_class(name)(cfg)
    want = sum(p.numel() for p in hf.parameters())  # a tied tensor once
    assert archcomp.summary(name).parameters == LIBRARY[name][0] == want


def _weighted_sum(out: dict[str, torch.Tensor]) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    terms = [(t * torch.randn(t.shape, generator=g)).sum() for t in out.values()]
    return torch.stack(terms).sum()


def _embedding(name: str) -> tuple[str, str]:
    return zoo.EMBEDDING.get(name, ("model.embed_tokens.weight", "embed_tokens.weight"))


def _forward_and_grad(
    name: str, hf: Any, ours: ArchModule, x: dict[str, torch.Tensor] | None = None
) -> None:
    """Logits and the token embedding's gradient equal transformers' (on ``x``, default
    tests/hf_zoo_decoders.py's inputs)."""
    x = x if x is not None else zoo.inputs(torch.Generator().manual_seed(1))
    with RoundingChains() as chains:
        want = zoo.call(hf, x)
        got = outputs(ours, {ours.input_names[0]: x["input_ids"]})  # llama's is 'ids'
        _weighted_sum(want).backward()
        _weighted_sum(got).backward()
    numerics.assert_close(
        got["logits"], want["logits"], chains.tolerance(torch.float32, got["logits"]), msg="logits"
    )
    hf_name, our_name = _embedding(name)
    hf_grad = hf.get_parameter(hf_name).grad
    our_grad = ours.get_parameter(our_name).grad
    assert hf_grad is not None and our_grad is not None
    numerics.assert_close(our_grad, hf_grad, chains.tolerance(torch.float32), msg="grad")


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=lambda v: str(v))
def test_variant_loads_and_exports(name: str, kw: dict[str, Any], tmp_path: Path) -> None:
    quiet()
    hf = zoo.make(name, seed=4, **kw)
    tied = bool(kw.get("tie_word_embeddings"))
    hf_name, our_name = _embedding(name)
    assert (hf.lm_head.weight is hf.get_parameter(hf_name)) is tied
    hf.save_pretrained(tmp_path / "hf")
    model = archcomp.from_pretrained(tmp_path / "hf")
    assert model.spec["params"].get("tie_word_embeddings", False) is tied
    assert (model.lm_head.weight is model.get_parameter(our_name)) is tied
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hf.parameters())
    _forward_and_grad(name, hf, model)
    archcomp.save_pretrained(model, tmp_path / "back")
    cls = zoo.transformers_class(name)
    attn = {k: v for k, v in kw.items() if k == "attn_implementation"}  # the rest: config.json
    again, info = cls.from_pretrained(tmp_path / "back", output_loading_info=True, **attn)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    x = zoo.inputs(torch.Generator().manual_seed(3))
    with torch.no_grad():
        numerics.assert_same(zoo.call(again.eval(), x)["logits"], zoo.call(hf, x)["logits"])


def test_phi3_longrope_short_sequences_and_the_hub_config(tmp_path: Path) -> None:
    """LongRoPE (Phi-3-mini-128k): sequences up to original_max_position_embeddings use
    short_factor (8 and 5 tokens of 8), and the hub's config.json (the older rope_scaling, type
    su or longrope, beside a top-level rope_theta) loads the same model; past the original
    context (VARIANTS: 9 tokens) the long factors."""
    import json

    quiet()
    hf = zoo.make("phi3", seed=7, **PHI3_128K)
    hf.save_pretrained(tmp_path)
    model = archcomp.from_pretrained(tmp_path)
    params = model.spec["params"]
    assert (params["rope_type"], params["original_context"]) == ("longrope", 8)
    assert params["long_factor"] == LONGROPE["long_factor"]
    for t in (8, 5):
        x = {"input_ids": torch.randint(1, 61, (2, t), generator=torch.Generator().manual_seed(t))}
        hf.zero_grad()
        model.zero_grad()
        _forward_and_grad("phi3", hf, model, x)
    config = json.loads((tmp_path / "config.json").read_text())
    scaling = config.pop("rope_parameters")
    config["rope_theta"] = scaling.pop("rope_theta")
    for key in ("rope_type", "original_max_position_embeddings", "partial_rotary_factor"):
        del scaling[key]  # the hub's: short_factor, long_factor, type
    for kind in ("su", "yarn", "longrope"):  # Phi3Config reads su and yarn as longrope
        config["rope_scaling"] = {**scaling, "type": kind}
        (tmp_path / "config.json").write_text(json.dumps(config))
        assert archcomp.from_pretrained(tmp_path).spec["params"] == params
    config["rope_scaling"]["attention_factor"] = 2.0  # transformers would use it: refused
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(archcomp.SpecError, match="attention_factor"):
        archcomp.from_pretrained(tmp_path)


@pytest.mark.parametrize("kw", [PHI3_128K, PHI4_MINI], ids=["phi3-128k", "phi4-mini"])
def test_phi3_longrope_generate_equals_transformers(kw: dict[str, Any], tmp_path: Path) -> None:
    """Greedy generate past LongRoPE's original context (8): transformers' Phi-3 runs the
    whole sequence again at the step that passes it (every key with the long factors), then
    steps on with the long ones; archcomp's generate the same, with its KV cache. Prompts of 5
    and 8 tokens (the switch mid-way, at the first step), 10 (long from the prefill) and a
    left-padded batch; compile=True, which cannot run the sequence again, is refused. Phi-4-mini
    too: the cached keys rotated on their first 3/4 only, the head tied."""
    quiet()
    hf = zoo.make("phi3", seed=7, **kw)
    hf.save_pretrained(tmp_path)
    model = archcomp.from_pretrained(tmp_path)
    for length, new in ((5, 8), (8, 6), (10, 5)):
        ids = torch.randint(1, 61, (2, length), generator=torch.Generator().manual_seed(length))
        want = hf.generate(
            ids, max_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=None
        )
        assert torch.equal(model.generate(ids, new), want), length
    mask = torch.ones(2, 6, dtype=torch.int64)
    mask[0, :2] = 0
    ids = torch.randint(1, 61, (2, 6), generator=torch.Generator().manual_seed(3)) * mask
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids, 7, attention_mask=mask), want)
    with pytest.raises(ValueError, match="LongRoPE"):
        model.generate(ids, 7, compile=True)


def test_phi3_partial_rotary_generate_equals_transformers(tmp_path: Path) -> None:
    """Greedy generate with RoPE on the first 3/4 of each head and the plain frequencies (the
    KV cache's keys rotated at their own positions, the last quarter not), a left-padded batch
    too, equals transformers' generate."""
    quiet()
    hf = zoo.make("phi3", seed=10, rope_parameters=PARTIAL, tie_word_embeddings=True)
    hf.save_pretrained(tmp_path)
    model = archcomp.from_pretrained(tmp_path)
    mask = torch.ones(2, 6, dtype=torch.int64)
    mask[0, :2] = 0
    ids = torch.randint(1, 61, (2, 6), generator=torch.Generator().manual_seed(3)) * mask
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=9, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids, 9, attention_mask=mask), want)


@pytest.mark.parametrize("factor", [16.0, 0.5])
def test_phi3_longrope_with_its_factor_given(factor: float, tmp_path: Path) -> None:
    """A LongRoPE config that gives its factor: transformers takes it over context / original
    context for the factor on cos and sin (16: sqrt(1 + ln 16 / ln 8), not sqrt(1 + ln 4 /
    ln 8); 0.5, at most 1: no factor at all), the frequencies unchanged. It loads as such
    (rope_factor), equals transformers past the original context and within it, and export
    writes it back: the same rope_parameters, the same model in transformers. The logits differ
    from those of the factor derived, so a factor read wrong would show. The hub's older
    rope_scaling with the factor loads the same."""
    import json

    quiet()
    rope = {**PHI3_128K, "rope_parameters": {**LONGROPE, "factor": factor}}
    hf = zoo.make("phi3", seed=8, **rope)
    hf.save_pretrained(tmp_path / "hf")
    model = archcomp.from_pretrained(tmp_path / "hf")
    params = model.spec["params"]
    assert (params["rope_type"], params["rope_factor"]) == ("longrope", factor)
    for t in (9, 5):
        x = {"input_ids": torch.randint(1, 61, (2, t), generator=torch.Generator().manual_seed(t))}
        hf.zero_grad()
        model.zero_grad()
        _forward_and_grad("phi3", hf, model, x)
    x = zoo.inputs(torch.Generator().manual_seed(3))
    derived = zoo.make("phi3", seed=8, **PHI3_128K)  # the same weights, the factor 4 derived
    with torch.no_grad():
        want = zoo.call(hf, x)["logits"]
        assert (want - zoo.call(derived, x)["logits"]).abs().max() > 1e-2
    archcomp.save_pretrained(model, tmp_path / "back")
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())["rope_parameters"]
    written = json.loads((tmp_path / "back" / "config.json").read_text())["rope_parameters"]
    assert written == saved and written["factor"] == factor
    again = type(hf).from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        numerics.assert_same(zoo.call(again, x)["logits"], want)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    scaling = config.pop("rope_parameters")
    config["rope_theta"] = scaling.pop("rope_theta")
    config["rope_scaling"] = {k: scaling[k] for k in ("short_factor", "long_factor", "factor")}
    config["rope_scaling"]["type"] = "longrope"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    assert archcomp.from_pretrained(tmp_path / "hf").spec["params"] == params


def test_phi4_mini_hub_config_loads(tmp_path: Path) -> None:
    """Phi-4-mini's config.json on the hub: partial_rotary_factor at the top, beside rope_theta
    and the older rope_scaling (type longrope, the two lists), the head tied, and fields
    transformers' Phi-3 does not read (attention_bias, mlp_bias, lm_head_bias, full_attn_mod,
    interpolate_factor): it loads as the model transformers saved, equal to transformers'
    model of that config.json in logits and the embedding's gradient."""
    import json

    quiet()
    hf = zoo.make("phi3", seed=9, **PHI4_MINI)
    hf.save_pretrained(tmp_path)
    params = archcomp.from_pretrained(tmp_path).spec["params"]
    config = json.loads((tmp_path / "config.json").read_text())
    scaling = config.pop("rope_parameters")
    config["rope_theta"] = scaling.pop("rope_theta")
    config["partial_rotary_factor"] = scaling.pop("partial_rotary_factor")
    config["rope_scaling"] = {k: scaling[k] for k in ("short_factor", "long_factor")}
    config["rope_scaling"]["type"] = "longrope"
    config |= {"attention_bias": False, "mlp_bias": False, "lm_head_bias": False}
    config |= {"full_attn_mod": 1, "interpolate_factor": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = archcomp.from_pretrained(tmp_path)
    assert model.spec["params"] == params
    assert (params["partial_rotary_factor"], params["tie_word_embeddings"]) == (0.75, True)
    again = type(hf).from_pretrained(tmp_path).eval()
    assert again.config.rope_parameters["partial_rotary_factor"] == 0.75
    _forward_and_grad("phi3", again, model)


def test_phi4_mini_count_equals_transformers_on_meta() -> None:
    """phi3.yaml's Phi-4-mini example: 3,836,021,760 parameters (the head tied), as
    transformers' Phi3ForCausalLM of its config."""
    from transformers import Phi3Config, Phi3ForCausalLM

    config = Phi3Config(
        vocab_size=200064,
        hidden_size=3072,
        num_attention_heads=24,
        num_key_value_heads=8,
        intermediate_size=8192,
        num_hidden_layers=32,
        tie_word_embeddings=True,
        partial_rotary_factor=0.75,
    )
    with torch.device("meta"):
        hf = Phi3ForCausalLM(config)
    params = {"vocab": 200064, "h": 24, "n_kv_heads": 8, "partial_rotary_factor": 0.75}
    params |= {"tie_word_embeddings": True, "context": 131072, "window": 262144}
    assert archcomp.summary("phi3", params).parameters == 3_836_021_760
    assert sum(p.numel() for p in hf.parameters()) == 3_836_021_760


def test_gpt_neox_other_checkpoint_names(tmp_path: Path) -> None:
    """save_pretrained writes the LM head as embed_out.weight (the hub's name); a checkpoint
    with the module's name, lm_head.weight, and the causal-mask and RoPE buffers per layer of
    older ones (the hub's Pythia) loads the same."""
    from safetensors.torch import load_file, save_file

    quiet()
    hf = zoo.make("gpt_neox", seed=5)
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["lm_head.weight"] = tensors.pop("embed_out.weight")
    for i in range(2):
        layer = f"gpt_neox.layers.{i}.attention"
        tensors[f"{layer}.bias"] = torch.ones(1, 1, 16, 16, dtype=torch.bool).tril()
        tensors[f"{layer}.masked_bias"] = torch.tensor(-1e9)
        tensors[f"{layer}.rotary_emb.inv_freq"] = torch.ones(2)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = archcomp.from_pretrained(tmp_path)
    x = zoo.inputs(torch.Generator().manual_seed(1))
    with RoundingChains() as chains:
        want = zoo.call(hf, x)["logits"]
        got = outputs(model, x)["logits"]
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got), msg="logits")


def test_llama_3_1_and_3_2_counts_equal_transformers_on_meta() -> None:
    """llama.yaml's -p examples: Llama 3.1 8B (the published 8,030,261,248) and Llama 3.2 1B
    (1,235,814,400, the head tied) count as transformers' models of their configs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    rope = {**LLAMA3, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192}
    sizes = {"vocab_size": 128256, "num_key_value_heads": 8, "max_position_embeddings": 131072}
    cases = [  # (the spec's params beyond rope_type and context, transformers' config, count)
        (
            {},
            {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32},
            8_030_261_248,
        ),
        (
            {
                "rope_factor": 32,
                "d_model": 2048,
                "N": 16,
                "d_ff": 8192,
                "tie_word_embeddings": True,
            },
            {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16},
            1_235_814_400,
        ),
    ]
    for params, cfg, count in cases:
        tied = bool(params.get("tie_word_embeddings"))
        config = LlamaConfig(
            **sizes,
            **cfg,
            num_attention_heads=32,
            tie_word_embeddings=tied,
            rope_parameters={**rope, "factor": float(params.get("rope_factor", 8.0))},
        )
        with torch.device("meta"):
            hf = LlamaForCausalLM(config)
        ours = {"rope_type": "llama3", "context": 131072, **params}
        assert archcomp.summary("llama", ours).parameters == count
        assert sum(p.numel() for p in hf.parameters()) == count


def test_llama_hub_config_with_the_older_rope_scaling_loads(tmp_path: Path) -> None:
    """The hub's config.json of Llama 3.1 and 3.2 has the older rope_scaling beside a top-level
    rope_theta (transformers 5 reads it into rope_parameters): the same model loads, and an
    older one's 'type' for 'rope_type' (Llama 2 fine-tunes' linear scaling) too."""
    import json

    quiet()
    hf = zoo.make("llama", seed=6, rope_parameters=LLAMA3, max_position_embeddings=1024)
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    scaling = config.pop("rope_parameters")
    config["rope_theta"] = scaling.pop("rope_theta")
    config["rope_scaling"] = scaling
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = archcomp.from_pretrained(tmp_path)
    params = model.spec["params"]
    assert (params["rope_type"], params["rope_theta"]) == ("llama3", 5e5)
    assert params["rope_original_context"] == 512
    _forward_and_grad("llama", hf, model)
    config["rope_scaling"] = {"type": "linear", "factor": 2.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    params = archcomp.from_pretrained(tmp_path).spec["params"]
    assert (params["rope_type"], params["rope_factor"]) == ("linear", 2.0)


@pytest.mark.parametrize(
    ("rope_type", "fields"),
    [
        ("default", set()),
        ("linear", {"factor"}),
        (
            "llama3",
            {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
        ),
    ],
)
def test_llama_export_writes_only_its_rope_types_fields(
    rope_type: str, fields: set[str], tmp_path: Path
) -> None:
    """config.json's rope_parameters carry the fields transformers reads for the type, no
    other (transformers warns of unrecognized keys), and read back to the same params."""
    import json

    params = {"N": 1, "d_model": 32, "h": 4, "n_kv_heads": 2, "d_ff": 48, "vocab": 61}
    model = archcomp.build("llama", {**params, "context": 16, "rope_type": rope_type})
    archcomp.save_pretrained(model, tmp_path)
    rope = json.loads((tmp_path / "config.json").read_text())["rope_parameters"]
    assert set(rope) == {"rope_type", "rope_theta"} | fields
    assert rope["rope_type"] == rope_type
    assert archcomp.from_pretrained(tmp_path).spec["params"] == model.spec["params"]
