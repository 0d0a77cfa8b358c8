"""``repeat`` carries state: a block input named like one of its results reads that result of
the copy before (docs/spec-format.md, "repeat"). A tiny recurrent block carrying ``h`` against
a hand-written loop (forward and gradients); ``repeat: 0`` passes the state on; a block whose
results all carry state has nothing for its first input (a located error).
"""

from __future__ import annotations

import pytest
import torch
from lowering import compile_for_test, run
from numerics import assert_same

from archcomp import SpecError, load_graph

RECURRENT = """
archcomp: 1
name: rnn
params: {N: 3}
blocks:
  cell:
    inputs: [x, h]
    nodes:
      - {id: wx, op: linear, in: x, out_features: 6}
      - {id: wh, op: linear, in: h, out_features: 6, bias: false}
      - {id: pre, op: add, in: [wx, wh]}
      - {id: new_h, op: tanh, in: pre}
      - {id: y, op: linear, in: new_h, out_features: 4}
    outputs: {y: y, h: new_h}
inputs: {x: [2, 4], h0: [2, 6]}
nodes:
  - {id: cells, op: cell, repeat: "${N}", in: {x: x, h: h0}}
outputs: {y: cells.y, h: cells.h}
"""


def _loop(model: torch.nn.Module, x: torch.Tensor, h: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The same recurrence written by hand with the model's weights."""
    p = dict(model.named_parameters())
    for k in range(n):
        w = f"cells.{k}."
        h = torch.tanh(
            torch.nn.functional.linear(x, p[w + "wx.weight"], p[w + "wx.bias"])
            + torch.nn.functional.linear(h, p[w + "wh.weight"])
        )
        x = torch.nn.functional.linear(h, p[w + "y.weight"], p[w + "y.bias"])
    return [x, h]


@pytest.mark.parametrize("n", [1, 3])
def test_state_is_carried_from_copy_to_copy_as_a_hand_written_loop(n: int) -> None:
    model = compile_for_test(load_graph(RECURRENT, {"N": n}))
    gen = torch.Generator().manual_seed(0)
    x0, h0 = torch.randn(2, 4, generator=gen), torch.randn(2, 6, generator=gen)
    xs = [t.clone().requires_grad_() for t in (x0, h0)]
    refs = [t.clone().requires_grad_() for t in (x0, h0)]
    out = run(model, *xs)
    want = _loop(model, *refs, n)
    assert_same(out["y"], want[0])
    assert_same(out["h"], want[1])
    weight = [torch.randn(t.shape, generator=gen) for t in want]
    params = list(model.parameters())
    got_g = torch.autograd.grad(
        [(out["y"] * weight[0]).sum(), (out["h"] * weight[1]).sum()], [*xs, *params]
    )
    want_g = torch.autograd.grad(
        [(want[0] * weight[0]).sum(), (want[1] * weight[1]).sum()], [*refs, *params]
    )
    for a, b in zip(got_g, want_g, strict=True):
        assert_same(a, b)


def test_an_empty_stack_passes_the_state_on() -> None:
    model = compile_for_test(load_graph(RECURRENT.replace("[2, 4]", "[2, 6]"), {"N": 0}))
    x, h = torch.randn(2, 6), torch.randn(2, 6)
    out = run(model, x, h)
    assert_same(out["y"], x)
    assert_same(out["h"], h)


def test_a_block_whose_results_all_carry_state_is_a_located_error() -> None:
    text = RECURRENT.replace("outputs: {y: y, h: new_h}", "outputs: {h: new_h}").replace(
        "outputs: {y: cells.y, h: cells.h}", "outputs: {h: cells.h}"
    )
    with pytest.raises(SpecError) as err:
        load_graph(text, {"N": 2})
    msg = str(err.value)
    assert "its results all carry state to the inputs of the same name (h)" in msg
    assert "first input 'x'" in msg and "repeat" in msg


def test_a_stack_carrying_state_compiles_fullgraph_and_exports() -> None:
    model = compile_for_test(load_graph(RECURRENT, {"N": 3})).eval()
    x, h = torch.randn(2, 4), torch.randn(2, 6)
    want = run(model, x, h)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    exported = torch.export.export(model, (x, h)).module()
    for got in (compiled(x, h), exported(x, h)):
        assert_same(got["y"], want["y"])
        assert_same(got["h"], want["h"])
