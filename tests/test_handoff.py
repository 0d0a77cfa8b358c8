"""Block inputs handed over (archcomp/backends/torch/handoff.py): a value whose last use is a
block call is gone once the block has used it, not when the block returns, as fx's own
``x = None`` frees a value after its last use; the block still takes plain tensors, and what
it computes (forward, gradients, under activation checkpointing, torch.compile and export) is
a hand-written torch composition of the same weights."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numerics
import torch
from equivalence import check_compile_export_emit
from numerics import RoundingChains
from torch import nn

import archcomp
from archcomp.backends.torch.checkpointing import checkpoint_blocks

SPEC = """
archcomp: 1
name: t
inputs: {x: [B, 8]}
blocks:
  two:
    inputs: [x]
    nodes:
      - {id: l1, op: linear, out_features: 8}
      - {id: act, op: tanh}
      - {id: l2, op: linear, out_features: 8}
    outputs: l2
nodes:
  - {id: fc0, op: linear, out_features: 8}
  - {id: b, op: two, repeat: 2}
  - {id: head, op: two}
outputs: head
"""


def _by_hand(m: Any, x: torch.Tensor) -> torch.Tensor:
    """The spec written out in torch with the model's own weights."""

    def two(block: Any, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(
            torch.tanh(nn.functional.linear(h, block.l1.weight, block.l1.bias)),
            block.l2.weight,
            block.l2.bias,
        )

    h = nn.functional.linear(x, m.fc0.weight, m.fc0.bias)
    return two(m.head, two(m.b[1], two(m.b[0], h)))


def test_a_block_drops_its_input_after_its_last_use() -> None:
    """fc0's output dies at the call of b[0]: once b[0]'s l1 has read it, it is freed (before,
    b[0]'s caller held it until b[0] returned), as is the head's input."""
    model = archcomp.build(SPEC, seed=0).eval()
    assert "fc0 = [fc0]" in model.code and "head = self.head(b_1)" in model.code
    assert "x = x.pop() if type(x) is list else x" in model.head.code
    made: dict[str, Any] = {}
    alive: dict[str, bool] = {}

    def keep(name: str) -> Any:
        return lambda mod, args, out: made.__setitem__(name, weakref.ref(out))

    def probe(name: str) -> Any:
        return lambda mod, args: alive.__setitem__(name, made[name]() is not None)

    model.fc0.register_forward_hook(keep("fc0"))
    model.b[1].l2.register_forward_hook(keep("b1"))
    model.b[0].l2.register_forward_pre_hook(probe("fc0"))
    model.head.l2.register_forward_pre_hook(probe("b1"))
    with torch.no_grad():
        model(torch.randn(3, 8))
    assert alive == {"fc0": False, "b1": False}


def test_blocks_take_tensors_and_compute_what_torch_does(tmp_path: Path) -> None:
    """Forward and gradients against the hand-written composition, with and without
    activation checkpointing of the repeated copies (whose recompute needs the inputs the
    handoff took); a block called with a tensor; torch.compile, export and emitted source."""
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    for checkpointed in (False, True):
        model = archcomp.build(SPEC, seed=0).train()
        if checkpointed:
            assert checkpoint_blocks(model) == ["b.0", "b.1"]
        with RoundingChains() as chains:
            got, want = model(x), _by_hand(model, x)
        numerics.assert_close(got, want, chains.tolerance(torch.float32, got), msg="forward")
        got.square().sum().backward()
        ours = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        want.square().sum().backward()
        assert len(ours) == 14
        for k, p in model.named_parameters():
            assert p.grad is not None
            numerics.assert_close(ours[k], p.grad, chains.tolerance(torch.float32), msg=k)
    h = torch.randn(3, 8)
    with torch.no_grad():
        numerics.assert_same(model.head(h), model.head([h]))
    check_compile_export_emit(archcomp.build(SPEC, seed=0), (x,), tmp_path)
