"""The zoo's decoder families beyond what tests/test_checkpoints.py runs on every family (its
tests take tests/hf_zoo_decoders.py's FAMILIES with sdpa attention and untied heads):

- each spec's parameter count at its defaults (the published size) equals transformers' model
  of the same config built on the meta device, ties counted once, and tests/spec_library.py's;
- the variants a family's checkpoints come in: eager attention, the tied LM head of the
  small sizes (Llama 3.2 1B/3B, Qwen2.5 0.5B-3B, Qwen3 0.6B-4B), Phi-3 without a window,
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

VARIANTS = [
    ("qwen2", {"attn_implementation": "eager", "tie_word_embeddings": True}),
    ("qwen3", {"attn_implementation": "eager", "tie_word_embeddings": True}),
    ("olmo2", {"attn_implementation": "eager"}),
    ("phi3", {"attn_implementation": "eager"}),
    ("phi3", {"sliding_window": None}),  # no window (Phi-3.5)
    ("gpt_neox", {"attn_implementation": "eager"}),
    ("gpt_neox", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}),  # Pythia's 1/4
    ("llama", {"tie_word_embeddings": True}),
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


def _forward_and_grad(name: str, hf: Any, ours: ArchModule) -> None:
    """Logits and the token embedding's gradient equal transformers'."""
    x = zoo.inputs(torch.Generator().manual_seed(1))
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
