"""The summary of a model built on the CPU (its weights stood in for by meta tensors while it
is traced, as ``archcomp build`` prints it) equals the summary of a build on meta, and leaves
the model's weights, buffers and gradients as they were."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import archcomp
from archcomp.backends.torch.metatwin import on_meta
from archcomp.backends.torch.summary import summarize
from archcomp.passes.pipeline import load_graph

CASES = [
    ("lstm_classifier", {}),  # nn.LSTM keeps its own list of its weights
    ("resnet18", {"width": 4, "n1": 1, "n2": 1, "n3": 1, "n4": 1, "image": 32, "classes": 3}),
    ("gpt2", {"vocab": 50, "context": 16, "d_model": 16, "h": 2, "N": 2}),  # tied head
    ("transformer", {"N": 2, "d_model": 16, "d_ff": 32, "h": 2, "vocab": 40}),
]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()}


@pytest.mark.parametrize(("spec", "params"), CASES)
def test_summary_of_a_cpu_build_equals_the_meta_build(spec: str, params: dict[str, Any]) -> None:
    g = load_graph(spec, params)
    model = archcomp.build(g.spec, params, seed=0)
    model.eval()
    before = _state(model)
    ids = {k: id(v) for k, v in model.state_dict(keep_vars=True).items()}
    reused = summarize(g, model, dims={"B": 2})
    assert reused.to_json() == summarize(g, dims={"B": 2}).to_json()
    assert not model.training  # its mode is its own again
    after = model.state_dict(keep_vars=True)
    assert {k: id(v) for k, v in after.items()} == ids  # the same tensors, tied ones still tied
    for k, v in after.items():
        assert v.device.type == "cpu", k
        assert torch.equal(v, before[k]), k  # batch norm's running statistics included
        assert v.grad is None, k


def test_on_meta_swaps_every_tensor_and_puts_it_back() -> None:
    lstm = torch.nn.Sequential(torch.nn.LSTM(3, 4), torch.nn.BatchNorm1d(3))
    weights = list(lstm.parameters())
    with on_meta(lstm):
        assert all(t.is_meta for t in [*lstm.parameters(), *lstm.buffers()])
        assert all(t.is_meta for t in lstm[0]._flat_weights)  # type: ignore[union-attr]
        out, _ = lstm[0](torch.zeros(2, 1, 3, device="meta"))
        assert out.is_meta
    assert list(lstm.parameters()) == weights
    assert all(t.device.type == "cpu" for t in lstm[0]._flat_weights)  # type: ignore[union-attr]
