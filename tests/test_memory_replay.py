"""The activation trace replays a block copy from an earlier copy of its class, and a call
from an earlier call like it: the same figures, node by node, as tracing every call, and the
bytes a real CPU forward keeps."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import archcomp
from archcomp.backends.torch import memory_replay
from archcomp.backends.torch.memory import ActivationTrace, trace_activations
from archcomp.passes.pipeline import load_graph

GPT2 = {"vocab": 64, "context": 16, "d_model": 32, "h": 4, "N": 3, "dropout": 0.0}
CHAIN = """
archcomp: 1
name: chain
inputs: {x: [B, 4]}
nodes:
  - {id: a, op: linear, out_features: 4}
  - {id: b, op: relu}
  - {id: c, op: linear, out_features: 4}
  - {id: d, op: relu}
  - {id: e, op: add, in: [a, d]}
  - {id: f, op: linear, out_features: 4, bias: false}
outputs: f
"""
NESTED = """
archcomp: 1
name: nested
inputs: {x: [B, 4]}
blocks:
  inner:
    inputs: [x]
    nodes:
      - {id: fc, op: linear, out_features: 4}
      - {id: act, op: relu}
      - {id: out, op: add, in: [x, act]}
    outputs: out
  outer:
    inputs: [x]
    nodes:
      - {id: a, op: inner, repeat: 2}
      - {id: norm, op: layer_norm}
    outputs: norm
nodes:
  - {id: layers, op: outer, repeat: 3}
outputs: layers
"""


def _trace(
    model: torch.nn.Module, spec: Any, params: Any, sizes: dict[str, int]
) -> ActivationTrace:
    return trace_activations(model, load_graph(spec, params), sizes, torch.float32)


def _every_copy_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_replay.Replays, "run", lambda self, k, n, a, trace: trace())


def _same(a: ActivationTrace, b: ActivationTrace) -> None:
    assert a.per_node == b.per_node
    assert a.copies == b.copies
    assert a.estimated == b.estimated


@pytest.mark.parametrize(
    ("spec", "params", "sizes"),
    [("gpt2", GPT2, {"B": 2, "T": 16}), (NESTED, None, {"B": 3}), (CHAIN, None, {"B": 3})],
)
def test_replayed_copies_count_as_traced_ones(
    spec: Any, params: Any, sizes: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = archcomp.build(spec, params, device="meta")
    replays = []
    real = memory_replay.replay
    monkeypatch.setattr(memory_replay, "replay", lambda *a: replays.append(a[1]) or real(*a))
    replayed = _trace(model, spec, params, sizes)
    assert sum(replayed.per_node.values()) > 0 and replays  # some calls were replayed
    _every_copy_traced(monkeypatch)
    _same(replayed, _trace(model, spec, params, sizes))


def test_a_copy_with_frozen_weights_is_traced_again(monkeypatch: pytest.MonkeyPatch) -> None:
    model = archcomp.build(NESTED, device="meta")
    model.layers[1].requires_grad_(False)  # its linears keep no inputs for weight gradients
    replayed = _trace(model, NESTED, None, {"B": 3})
    _every_copy_traced(monkeypatch)
    traced = _trace(model, NESTED, None, {"B": 3})
    _same(replayed, traced)
    assert replayed.copies["layers.1"] != replayed.copies["layers.2"]


def test_the_total_is_what_a_cpu_forward_keeps() -> None:
    """An independent count: the bytes autograd keeps in a real forward of the CPU build
    (no attention here: the meta trace follows the math path, the CPU a fused kernel)."""
    model = archcomp.build(NESTED, seed=0).train()
    skip = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    seen: set[int] = set()
    kept = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in skip and key not in seen:
            seen.add(key)
            kept.append(t)  # alive to the end: no other storage can take its address
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(torch.randn(3, 4))
    del out
    trace = _trace(archcomp.build(NESTED, device="meta"), NESTED, None, {"B": 3})
    assert trace.total == sum(t.untyped_storage().nbytes() for t in kept) > 0
