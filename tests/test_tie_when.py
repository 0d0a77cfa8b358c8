"""A ``tie`` whose presence follows a param: ``tie: {weight: embed.weight, when: ${flag}}``."""

from __future__ import annotations

import pytest
import torch

import archcomp

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
