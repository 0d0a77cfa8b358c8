"""A ``tie`` whose presence follows a param: ``tie: {weight: embed.weight, when: ${flag}}``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

import archcomp
from archcomp import SpecError

ROOT = Path(archcomp.__file__).parent
PARAMS = {"vocab": 61, "d_model": 32, "h": 4, "n_kv_heads": 2, "d_ff": 48, "N": 2, "context": 16}

SPEC = """
archcomp: 1
name: tiny_lm
params: {tie_word_embeddings: false, vocab: 11, d: 8}
inputs: {ids: {shape: [B, T], dtype: int64}}
nodes:
  - {id: embed, op: embedding, num_embeddings: "${vocab}", embedding_dim: "${d}"}
  - {id: norm, op: rms_norm}
  - {id: head, op: linear, out_features: "${vocab}", bias: false,
     tie: {weight: embed.weight, when: "${tie_word_embeddings}"}}
outputs: {logits: head}
"""


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("tied", [False, True])
def test_the_param_decides_the_tie(tied: bool) -> None:
    """Tied: one Parameter for both names; untied: the head has its own, drawn apart."""
    torch.manual_seed(0)
    model = archcomp.build(SPEC, params={"tie_word_embeddings": tied})
    assert list(model.state_dict()) == ["embed.weight", "norm.weight", "head.weight"]
    assert (model.head.weight is model.embed.weight) is tied
    assert _count(model) == 88 + 8 + (0 if tied else 88)
    if not tied:  # its own parameter, not a copy of the embedding
        assert not torch.equal(model.head.weight, model.embed.weight)
        with torch.no_grad():
            model.embed.weight.zero_()
        assert model.head.weight.abs().sum() > 0


def test_tie_when_follows_an_expression_per_copy() -> None:
    """``when`` sees the node's params, ``index`` too: only copy 0 of the stack is tied."""
    text = """
archcomp: 1
name: m
inputs: {x: [B, 4]}
nodes:
  - {id: a, op: linear, out_features: 4}
  - {id: b, op: linear, out_features: 4, repeat: 3, tie: {weight: a.weight, when: "${index == 0}"}}
outputs: b
"""
    model = archcomp.build(text)
    tied = [getattr(model.b, str(k)).weight is model.a.weight for k in range(3)]
    assert tied == [True, False, False]


def _hf_llama(tied: bool) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        vocab_size=61,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("tied", [False, True])
def test_llama_tie_from_pretrained(tied: bool, tmp_path: Path) -> None:
    """A Llama 3.2-style tied checkpoint (save_pretrained writes no lm_head.weight) and the
    untied default both load into the shipped llama spec: the tie follows config.json, the
    parameters are transformers' own (count, names, the one shared tensor) and the logits
    equal transformers'. Export writes the same keys back."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    hf = _hf_llama(tied)
    hf.save_pretrained(tmp_path / "hf")
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert ("lm_head.weight" in saved) is not tied
    model = archcomp.from_pretrained(tmp_path / "hf")
    assert model.spec["params"]["tie_word_embeddings"] is tied
    assert (model.lm_head.weight is model.embed_tokens.weight) is tied
    assert _count(model) == _count(hf)
    ours = {k.replace("out_proj", "o_proj") for k in model.state_dict()}
    theirs = {k.removeprefix("model.") for k in hf.state_dict()}
    assert ours == theirs  # lm_head.weight in both state dicts, tied or not
    ids = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, rtol=1e-5, atol=1e-5)
    archcomp.save_pretrained(model, tmp_path / "back")
    with safe_open(str(tmp_path / "back" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == saved
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["tie_word_embeddings"] is tied


def test_llama_default_is_untied() -> None:
    """The shipped spec's default output is unchanged: its own LM head."""
    model = archcomp.build("llama", device="meta", params=PARAMS)
    assert model.lm_head.weight is not model.embed_tokens.weight
    tied = archcomp.build("llama", device="meta", params={**PARAMS, "tie_word_embeddings": True})
    assert _count(model) - _count(tied) == 61 * 32


def test_rule_when_that_is_not_a_bool(tmp_path: Path) -> None:
    """A rule's ``when`` is checked against the spec's params, located in the mapping."""
    hf = _hf_llama(False)
    hf.save_pretrained(tmp_path / "hf")
    text = (ROOT / "specs" / "hf" / "llama.yaml").read_text()
    bad = text.replace('when: "${not tie_word_embeddings}"', 'when: "${vocab}"')
    (tmp_path / "llama.hf.yaml").write_text(bad.replace("spec: llama", "spec: llama.yaml"))
    (tmp_path / "llama.yaml").write_text((ROOT / "specs" / "llama.yaml").read_text())
    (tmp_path / "blocks").mkdir()
    blocks = (ROOT / "specs" / "blocks" / "llama.yaml").read_text()
    (tmp_path / "blocks" / "llama.yaml").write_text(blocks)
    with pytest.raises(SpecError) as exc:
        archcomp.from_pretrained(tmp_path / "hf", mapping=tmp_path / "llama.hf.yaml")
    line = bad.splitlines().index(next(x for x in bad.splitlines() if "${vocab}" in x)) + 1
    assert f"llama.hf.yaml:{line}:" in str(exc.value)
    assert "a rule's 'when' must be a bool, found 61" in str(exc.value)


NESTED = """
archcomp: 1
name: nested_tie
inputs: {ids: {shape: [B, T], dtype: int64}}
blocks:
  body:
    inputs: [ids]
    nodes:
      - {id: embed, op: embedding, num_embeddings: 11, embedding_dim: 8}
      - {id: layers, op: linear_stack, repeat: 2}
    outputs: layers
  linear_stack:
    inputs: [x]
    nodes:
      - {id: fc, op: linear, out_features: 8}
    outputs: fc
nodes:
  - {id: model, op: body}
  - {id: head, op: linear, out_features: 11, bias: false, tie: {weight: TARGET}}
outputs: {logits: head}
"""


def test_a_tie_names_a_parameter_inside_a_block_call() -> None:
    """``model.embed.weight``: the embedding inside the call ``model`` (an imported LM head)."""
    model = archcomp.build(NESTED.replace("TARGET", "model.embed.weight"))
    assert model.head.weight is model.model.embed.weight
    assert "head.weight" not in dict(model.named_parameters())


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("model.embedd.weight", "'model' has no node 'embedd' before this one"),
        ("model.embed.bias", "node 'model.embed' (embedding) has no parameter 'bias'"),
        ("model.layers.0.fc.weight", "cannot tie weight [11, 8] to model.layers.0.fc.weight"),
        ("modle.embed.weight", "tie target 'modle' is not a node here"),
    ],
)
def test_a_bad_tie_into_a_block_is_located(target: str, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        archcomp.check(NESTED.replace("TARGET", target))
