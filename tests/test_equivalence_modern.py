"""specs/llama.yaml, specs/mistral.yaml and specs/vit_b16.yaml against transformers' own models
(LlamaForCausalLM, MistralForCausalLM, ViTForImageClassification) built from small random
configs, nothing downloaded, with the references' weights copied in: logits and every
parameter's gradient, eval mode. Also: the exact parameter counts at full size (on meta), the
Llama 2 7B sizes through params, and compile / export / --emit-python of the small models.

Tolerances are torch.testing's float32 defaults for outputs and 1e-4 for gradients, as in
tests/test_compiler_equivalence.py (until tests/numerics.py lands): both sides run the same
float32 matmuls in a different order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import check_compile_export_emit
from torch import nn
from torch.testing import assert_close

import archcomp

SPECS = Path(__file__).resolve().parent.parent / "specs"

# specs/llama.yaml -p overrides for Llama 2 7B (ARCHITECTURES.md 9)
LLAMA2_7B = {
    "vocab": 32000,
    "n_kv_heads": 32,
    "d_ff": 11008,
    "rope_theta": 10000.0,
    "eps": 1e-6,
    "context": 4096,
}


def test_full_size_counts_on_meta() -> None:
    assert archcomp.summary(SPECS / "llama.yaml").parameters == 8_030_261_248
    assert archcomp.summary(SPECS / "llama.yaml", LLAMA2_7B).parameters == 6_738_415_616
    assert archcomp.summary(SPECS / "mistral.yaml").parameters == 7_241_732_096
    assert archcomp.summary(SPECS / "vit_b16.yaml").parameters == 86_567_656
    model = archcomp.build(SPECS / "llama.yaml", device="meta")
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    assert sum(p.numel() for p in params) == 8_030_261_248
    assert model.layers[0].self_attn.k_proj.weight.shape == (1024, 4096)  # 8 of 32 heads


def _hf_name(name: str, prefix: str, table: list[tuple[str, str]]) -> str:
    for pattern, repl in table:
        name = re.sub(pattern, repl, name)
    return name if name.startswith(("lm_head", "classifier")) else prefix + name


LLAMA_NAMES = [(r"\.out_proj\.", ".o_proj.")]


def copy_weights(model: nn.Module, ref: nn.Module, names: dict[str, str]) -> None:
    theirs = dict(ref.named_parameters())
    mine = dict(model.named_parameters())
    assert set(names) == set(mine)
    assert set(names.values()) == set(theirs), set(theirs) - set(names.values())
    with torch.no_grad():
        for ours, hf in names.items():
            mine[ours].copy_(theirs[hf].reshape(mine[ours].shape))


def compare(
    model: nn.Module,
    ref: nn.Module,
    names: dict[str, str],
    got: torch.Tensor,
    want: torch.Tensor,
) -> dict[str, float]:
    """Logits, then every parameter's gradient under a weighted loss; the max errors."""
    assert_close(got, want)
    weights = torch.linspace(0.5, 1.5, got.numel()).view_as(got)
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    theirs = dict(ref.named_parameters())
    worst = 0.0
    for ours, p in model.named_parameters():
        expected = theirs[names[ours]].grad
        assert p.grad is not None and expected is not None, ours
        expected = expected.reshape(p.shape)
        assert_close(p.grad, expected, atol=1e-4, rtol=1e-4, msg=lambda m, n=ours: f"{n}: {m}")
        worst = max(worst, (p.grad - expected).abs().max().item())
    return {"logits": (got - want).abs().max().item(), "grads": worst}


# -- Llama -------------------------------------------------------------------------------------

SMALL = {"N": 2, "d_model": 64, "h": 4, "n_kv_heads": 2, "d_ff": 96, "vocab": 100, "context": 32}


def llama_pair(
    spec: str, params: dict[str, Any], attn: str, window: int | None = None
) -> tuple[nn.Module, nn.Module, dict[str, str]]:
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    common = {
        "vocab_size": params["vocab"],
        "hidden_size": params["d_model"],
        "intermediate_size": params["d_ff"],
        "num_hidden_layers": params["N"],
        "num_attention_heads": params["h"],
        "num_key_value_heads": params["n_kv_heads"],
        "max_position_embeddings": params["context"],
        "rms_norm_eps": params["eps"],
        "rope_parameters": {"rope_type": "default", "rope_theta": params["rope_theta"]},
        "tie_word_embeddings": False,
        "attn_implementation": attn,
    }
    torch.manual_seed(0)
    if window is None:
        ref: nn.Module = LlamaForCausalLM(LlamaConfig(**common))
    else:
        ref = MistralForCausalLM(MistralConfig(**common, sliding_window=window))
    with torch.no_grad():  # transformers initialises the norms' gains to 1: vary them
        for name, p in ref.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    model = archcomp.build(SPECS / spec, params=params, seed=0)
    names = {n: _hf_name(n, "model.", LLAMA_NAMES) for n, _ in model.named_parameters()}
    copy_weights(model, ref, names)
    return model.eval(), ref.eval(), names


@pytest.mark.parametrize(
    "sizes",
    [
        {"eps": 1e-5, "rope_theta": 500000.0},  # Llama 3: grouped-query heads
        {"eps": 1e-6, "rope_theta": 10000.0, "n_kv_heads": 4},  # Llama 2: one K/V per head
    ],
    ids=["llama3", "llama2"],
)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_llama_matches_transformers(sizes: dict[str, Any], attn: str) -> None:
    params = {**SMALL, **sizes}
    model, ref, names = llama_pair("llama.yaml", params, attn)
    ids = torch.randint(0, 100, (3, 17), generator=torch.Generator().manual_seed(1))
    compare(model, ref, names, model(ids), ref(ids).logits)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_mistral_matches_transformers_beyond_the_window(attn: str) -> None:
    params = {**SMALL, "eps": 1e-5, "rope_theta": 10000.0, "window": 5}
    model, ref, names = llama_pair("mistral.yaml", params, attn, window=5)
    ids = torch.randint(0, 100, (2, 19), generator=torch.Generator().manual_seed(2))
    got = model(ids)
    compare(model, ref, names, got, ref(ids).logits)
    # the window matters here: the same weights with a window past the input's length differ
    full = archcomp.build(SPECS / "mistral.yaml", params={**params, "window": 32})
    full.load_state_dict(model.state_dict())
    assert not torch.allclose(full(ids), got.detach(), atol=1e-3)


def test_llama_compiles_exports_and_emits(tmp_path: Path) -> None:
    model, _, _ = llama_pair("llama.yaml", {**SMALL, "eps": 1e-5, "rope_theta": 5e5}, "sdpa")
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(3))
    check_compile_export_emit(model, (ids,), tmp_path)
    assert "self.layers[1](layers_0)" in model.code.replace("  ", " ")


# -- ViT -------------------------------------------------------------------------------------

VIT_SMALL = {"image_size": 32, "patch": 8, "d_model": 48, "h": 4, "N": 2, "d_ff": 96, "classes": 10}

VIT_NAMES = [  # transformers 5's ViT names
    (r"^conv_proj\.", "embeddings.patch_embeddings.projection."),
    (r"^class_token\.weight$", "embeddings.cls_token"),
    (r"^pos_embedding\.weight$", "embeddings.position_embeddings"),
    (r"\.ln_1\.", ".layernorm_before."),
    (r"\.ln_2\.", ".layernorm_after."),
    (r"\.self_attention\.out_proj\.", ".attention.o_proj."),
    (r"\.self_attention\.", ".attention."),
    (r"^ln\.", "layernorm."),
    (r"^head\.", "classifier."),
]


def vit_pair(attn: str) -> tuple[nn.Module, nn.Module, dict[str, str]]:
    from transformers import ViTConfig, ViTForImageClassification

    p = VIT_SMALL
    cfg = ViTConfig(
        hidden_size=p["d_model"],
        num_hidden_layers=p["N"],
        num_attention_heads=p["h"],
        intermediate_size=p["d_ff"],
        image_size=p["image_size"],
        patch_size=p["patch"],
        num_labels=p["classes"],
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation=attn,
    )
    torch.manual_seed(0)
    ref = ViTForImageClassification(cfg)
    with torch.no_grad():  # vary what transformers initialises to constants
        for name, t in ref.named_parameters():
            if "layernorm" in name or name.endswith("cls_token"):
                t.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    model = archcomp.build(SPECS / "vit_b16.yaml", params=p, seed=0)
    names = {n: _hf_name(n, "vit.", VIT_NAMES) for n, _ in model.named_parameters()}
    copy_weights(model, ref, names)
    return model.eval(), ref.eval(), names


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_vit_matches_transformers(attn: str) -> None:
    model, ref, names = vit_pair(attn)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    compare(model, ref, names, model(images), ref(images).logits)


def test_vit_compiles_exports_and_emits(tmp_path: Path) -> None:
    model, _, _ = vit_pair("sdpa")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    check_compile_export_emit(model, (images,), tmp_path)
