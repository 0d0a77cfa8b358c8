"""Recurrent layers: rnn, lstm, gru (lowered to torch's nn.RNN / nn.LSTM / nn.GRU)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Shape, fmt_shape, mul
from archcomp.ops.common import need_float
from archcomp.ops.registry import (
    LowerCtx,
    OpArgs,
    OpDef,
    Port,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)

# Gate blocks per cell: the rows of weight_ih / weight_hh are gates * hidden_size.
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# Each layer is a row of the op's weight table (up to 8 tensors); check builds the table, so
# the count is bounded like every other size a spec can ask for.
MAX_LAYERS = 1024


class RecurrentArgs(OpArgs):
    """A stack of ``num_layers`` recurrent layers over x [B, S, input_size].

    Unlike torch, archcomp defaults to ``batch_first: true``: x and ``output`` are [B, S, ...]
    (with ``batch_first: false``, [S, B, ...]); h0/h_n (and c0/c_n) are [D*num_layers, B,
    hidden_size] either way, D = 2 if bidirectional else 1. ``dropout`` applies between
    layers, so it needs num_layers > 1. ``input_size`` is inferred from the input's last dim.
    """

    hidden_size: int = Field(gt=0)
    num_layers: int = Field(default=1, gt=0, le=MAX_LAYERS)
    bias: bool = True
    batch_first: bool = Field(default=True, description="archcomp's default; torch's is false")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="between layers")
    bidirectional: bool = False
    input_size: int | None = Field(default=None, gt=0, description="inferred from the input")


class RNNArgs(RecurrentArgs):
    __doc__ = (RecurrentArgs.__doc__ or "") + "\n    ``nonlinearity`` is tanh (default) or relu."

    nonlinearity: Literal["tanh", "relu"] = "tanh"


def _directions(a: RecurrentArgs) -> int:
    return 2 if a.bidirectional else 1


def _shape_rule(kind: str) -> Callable[[ShapeCtx], dict[str, TensorType]]:
    def rule(ctx: ShapeCtx) -> dict[str, TensorType]:
        a: RecurrentArgs = ctx.args
        x = ctx.get("x")
        assert x is not None
        need_float(x, "x", kind)
        if x.rank != 3:
            dims = "[B, S, input_size]" if a.batch_first else "[S, B, input_size]"
            raise ShapeError(
                f"{kind} expects x as {dims}, found {fmt_shape(x.shape)}",
                port="x",
                hint="batched input only" + ("" if a.batch_first else " (batch_first: false)"),
            )
        if a.dropout > 0 and a.num_layers == 1:
            raise ShapeError(
                f"dropout {a.dropout} applies between layers and has no effect with num_layers 1",
                arg="dropout",
                hint="drop it, or add a dropout op after this one",
            )
        B, S = (x.shape[0], x.shape[1]) if a.batch_first else (x.shape[1], x.shape[0])
        ctx.infer("input_size", ctx.concrete(x.shape[2], "the input's last dim (input_size)", "x"))
        D = _directions(a)
        state: Shape = (D * a.num_layers, B, a.hidden_size)
        states = ("h0", "c0") if kind == "lstm" else ("h0",)
        for port in states:
            t = ctx.get(port)
            if t is None:
                continue
            if t.dtype != x.dtype:
                raise ShapeError(f"{port} is {t.dtype} but x is {x.dtype}", port=port)
            if t.shape != state:
                raise ShapeError(
                    f"{port} must be [D*num_layers, B, hidden_size] = {fmt_shape(state)}, "
                    f"found {fmt_shape(t.shape)}",
                    port=port,
                )
        seq: Shape = (B, S) if a.batch_first else (S, B)
        out = {
            "output": TensorType((*seq, D * a.hidden_size), x.dtype),
            "h_n": TensorType(state, x.dtype),
        }
        if kind == "lstm":
            out["c_n"] = TensorType(state, x.dtype)
        return out

    return rule


def _params_rule(kind: str) -> Callable[[Any], dict[str, Shape]]:
    def params(a: RecurrentArgs) -> dict[str, Shape]:
        rows = GATES[kind] * a.hidden_size
        D = _directions(a)
        p: dict[str, Shape] = {}
        for layer in range(a.num_layers):
            fan_in = (a.input_size or 0) if layer == 0 else D * a.hidden_size
            for sfx in ("", "_reverse")[:D]:
                p[f"weight_ih_l{layer}{sfx}"] = (rows, fan_in)
                p[f"weight_hh_l{layer}{sfx}"] = (rows, a.hidden_size)
                if a.bias:
                    p[f"bias_ih_l{layer}{sfx}"] = (rows,)
                    p[f"bias_hh_l{layer}{sfx}"] = (rows,)
        return p

    return params


def _macs_rule(kind: str) -> Callable[[Any, Any, dict[str, TensorType]], Dim]:
    def macs(a: RecurrentArgs, ins: Any, outs: dict[str, TensorType]) -> Dim:
        """Matrix products only: gates * H * (fan_in + H) per step, direction and layer."""
        H, D = a.hidden_size, _directions(a)
        per_step = 0
        for layer in range(a.num_layers):
            fan_in = (a.input_size or 0) if layer == 0 else D * H
            per_step += D * GATES[kind] * H * (fan_in + H)
        out = outs["output"].shape
        return mul(mul(out[0], out[1]), per_step)  # B * S steps

    return macs


def _lower_rule(kind: str) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        import torch
        from torch import nn

        a: RecurrentArgs = c.args
        common: dict[str, Any] = {
            "num_layers": a.num_layers,
            "bias": a.bias,
            "batch_first": a.batch_first,
            "dropout": a.dropout,
            "bidirectional": a.bidirectional,
            **c.factory,
        }
        size = (a.input_size or 0, a.hidden_size)
        m: nn.Module
        if kind == "lstm":
            m = nn.LSTM(*size, **common)
        elif kind == "gru":
            m = nn.GRU(*size, **common)
        else:
            assert isinstance(a, RNNArgs)
            m = nn.RNN(*size, nonlinearity=a.nonlinearity, **common)
        h0, c0 = c.inputs.get("h0"), c.inputs.get("c0")
        call = c.module(m)
        if kind == "lstm" and (h0 is not None or c0 is not None):
            # torch takes both states or neither: a missing one starts at zero.
            h0 = h0 if h0 is not None else c.call(torch.zeros_like, c0)
            c0 = c0 if c0 is not None else c.call(torch.zeros_like, h0)
            res = call(c.x, (h0, c0))
        elif h0 is not None:
            res = call(c.x, h0)
        else:
            res = call(c.x)  # zero initial state
        get = operator.getitem
        out = {"output": c.call(get, res, 0)}  # (B, S, D*H)
        if kind == "lstm":
            state = c.call(get, res, 1)  # (h_n, c_n)
            out["h_n"] = c.call(get, state, 0)  # (D*L, B, H)
            out["c_n"] = c.call(get, state, 1)  # (D*L, B, H)
        else:
            out["h_n"] = c.call(get, res, 1)  # (D*L, B, H)
        return out

    return lower


for _kind, _args, _label, _doc in [
    ("rnn", RNNArgs, "RNN", "Elman RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)."),
    ("lstm", RecurrentArgs, "LSTM", "LSTM: input, forget, output gates and a cell state."),
    ("gru", RecurrentArgs, "GRU", "GRU: reset and update gates."),
]:
    _ports = (Port("x"), Port("h0", optional=True))
    register(
        OpDef(
            _kind,
            _args,
            _shape_rule(_kind),
            Style("recurrent", _label, state="h, c" if _kind == "lstm" else "h"),
            inputs=(*_ports, Port("c0", optional=True)) if _kind == "lstm" else _ports,
            results=("output", "h_n", "c_n") if _kind == "lstm" else ("output", "h_n"),
            params=_params_rule(_kind),
            macs=_macs_rule(_kind),
            lower=_lower_rule(_kind),
            doc=_doc + " Results: output, h_n" + (", c_n." if _kind == "lstm" else "."),
        )
    )
