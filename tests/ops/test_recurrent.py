"""Recurrent layers (archcomp/ops/recurrent.py): rnn, lstm, gru. Shapes, selectable results,
errors, parameters and numerics against the torch.nn modules, MACs.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import numerics
import pytest
import torch
from lowering import (
    compile_for_test,
    declared,
    error_of,
    param_shapes,
    rnn_spec,
    run,
    spec_body,
    where_on,
)
from numerics import RoundingChains, assert_same
from torch import nn

from archcomp import load_graph
from archcomp.ir import TensorType
from archcomp.ir.dims import Sym

B, S = (Sym.symbol(n) for n in "BS")


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru"])
def test_recurrent_shapes(op: str) -> None:
    g = load_graph(rnn_spec(op, "hidden_size: 8, num_layers: 2, bidirectional: true"))
    n = g.nodes["rnn"]
    assert n.args.input_size == 10
    assert n.outputs["output"] == TensorType((B, S, 16))
    assert n.outputs["h_n"] == TensorType((4, B, 8))
    assert (n.outputs.get("c_n") is not None) == (op == "lstm")
    assert (n.op.style.family, n.op.style.label) == ("recurrent", op.upper())
    # batch_first: false is torch's sequence-first layout
    g = load_graph(rnn_spec(op, "hidden_size: 8, batch_first: false", x="[S, B, 10]"))
    assert g.output_types == {"out": TensorType((S, B, 8)), "h": TensorType((1, B, 8))}


def test_lstm_results_selectable() -> None:
    g = load_graph(rnn_spec("lstm", "hidden_size: 8", outputs="{c: rnn.c_n}"))
    assert g.output_types["c"] == TensorType((1, B, 8))
    text = rnn_spec("gru", "hidden_size: 8", outputs="{c: rnn.c_n}")
    msg, _, _ = error_of(text)
    assert msg == "'rnn.c_n': op 'gru' has no result 'c_n'"


def test_recurrent_errors() -> None:
    text = rnn_spec("lstm", "hidden_size: 8, dropout: 0.2")
    msg, line, col = error_of(text)
    assert msg == "dropout 0.2 applies between layers and has no effect with num_layers 1"
    assert (line, col) == where_on(text, "dropout", "0.2")

    text = rnn_spec("rnn", "hidden_size: 8, nonlinearity: sigmoid")
    msg, line, col = error_of(text)
    assert msg == "'nonlinearity': expected 'tanh' or 'relu', found string 'sigmoid'"
    assert (line, col) == where_on(text, "nonlinearity", "sigmoid")

    text = rnn_spec("gru", "hidden_size: 8", x="[B, 10]")
    assert error_of(text)[0] == "gru expects x as [B, S, input_size], found [B, 10]"

    text = rnn_spec("lstm", "hidden_size: 8, num_layers: 2", states="h0: [1, B, 8]")
    msg, line, col = error_of(text)
    assert msg == "h0 must be [D*num_layers, B, hidden_size] = [2, B, 8], found [1, B, 8]"
    assert (line, col) == where_on(text, "h0: h0", "h0}")

    text = rnn_spec("lstm", "hidden_size: 8, input_size: 12")
    assert error_of(text)[0] == "input_size is 12 but the input gives 10"


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("lstm", "hidden_size: 8, num_layers: 2, bidirectional: true"),
        ("lstm", "hidden_size: 8, bias: false"),
        ("gru", "hidden_size: 6, num_layers: 3"),
        ("rnn", "hidden_size: 5, nonlinearity: relu, bidirectional: true"),
    ],
)
def test_recurrent_params_match_torch_modules(op: str, args: str) -> None:
    g = load_graph(rnn_spec(op, args))
    m = compile_for_test(g).get_submodule("rnn")
    assert type(m) is {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[op]
    assert list(param_shapes(m).items()) == list(declared(g, "rnn").items())


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
def test_recurrent_numerics_match_torch(op: str, with_state: bool, torch_threads: int) -> None:
    is_lstm = op == "lstm"
    states = "h0: [4, B, 8]" + ("; c0: [4, B, 8]" if is_lstm else "")
    outs = "{out: rnn.output, h: rnn.h_n" + (", c: rnn.c_n}" if is_lstm else "}")
    text = rnn_spec(
        op,
        "hidden_size: 8, num_layers: 2, bidirectional: true",
        states=states if with_state else "",
        outputs=outs,
    )
    gm = compile_for_test(load_graph(text))
    ours = gm.get_submodule("rnn")
    ref = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[op](
        10, 8, num_layers=2, bidirectional=True, batch_first=True
    )
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 10)
    given = [torch.randn(4, 3, 8) for _ in range(2 if is_lstm else 1)] if with_state else []
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    with RoundingChains() as chains:
        got = run(gm, xs, *given)
        hx = (tuple(given) if is_lstm else given[0]) if with_state else None
        out, state = ref(xr, hx)
        h, c = state if is_lstm else (state, None)
        forward = chains.tolerance(out.dtype, out, h, *got.values())
        loss = got["out"].square().sum() + got["h"].sum()
        loss.backward()
        (out.square().sum() + h.sum()).backward()
    numerics.assert_close(got["out"], out, forward)
    numerics.assert_close(got["h"], h, forward)
    if is_lstm:
        assert c is not None
        numerics.assert_close(got["c"], c, forward)
    backward = chains.tolerance(out.dtype)
    assert xs.grad is not None and xr.grad is not None
    numerics.assert_close(xs.grad, xr.grad, backward)
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        numerics.assert_close(p.grad, q.grad, backward, msg=name)


def test_lstm_h0_alone_starts_cell_at_zero() -> None:
    text = rnn_spec("lstm", "hidden_size: 8", states="h0: [1, B, 8]")
    gm = compile_for_test(load_graph(text))
    x, h0 = torch.randn(2, 4, 10), torch.randn(1, 2, 8)
    out, (h, _) = gm.get_submodule("rnn")(x, (h0, torch.zeros_like(h0)))
    got = run(gm, x, h0)
    assert_same(got["out"], out)
    assert_same(got["h"], h)


def test_recurrent_macs() -> None:
    g = load_graph(rnn_spec("lstm", "hidden_size: 8, num_layers: 2"))
    n = g.nodes["rnn"]
    assert n.op.macs is not None
    # layer 0: 4 gates * 8 * (10 + 8); layer 1: 4 * 8 * (8 + 8); per batch row and step
    assert n.op.macs(n.args, {}, n.outputs) == Sym({("B", "S"): 4 * 8 * 18 + 4 * 8 * 16})


def test_lstm_classifier() -> None:
    """ARCHITECTURES.md 5: LSTM(10 -> 8, 2 layers), Linear(8 -> 2) on out[:, -1, :]."""
    text = spec_body(
        """
        inputs:
          x: [B, S, 10]
        nodes:
          - {id: lstm, op: lstm, hidden_size: 8, num_layers: 2}
          - {id: last, op: index, in: lstm.output, at: "[:, -1, :]"}
          - {id: fc, op: linear, out_features: 2}
        outputs: fc
        """
    )
    g = load_graph(text)
    assert g.output_types["fc"] == TensorType((B, 2))
    gm = compile_for_test(g)
    assert (
        sum(p.numel() for p in gm.parameters()) == 4 * 8 * (10 + 8 + 2) + 4 * 8 * (8 + 8 + 2) + 18
    )
    x = torch.randn(3, 6, 10)
    out, _ = gm.lstm(x)
    assert_same(run(gm, x)["fc"], gm.fc(out[:, -1, :]))
