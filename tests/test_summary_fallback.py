"""A data-dependent op (one whose lowering cannot run on meta tensors) no longer blanks the
summary's activations: its row is estimated by its op's activation rule, or by its outputs'
size and marked "?", while every other node is still measured by the meta forward."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import archcomp
from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, mul
from archcomp.ops.registry import REGISTRY, LowerCtx, NoArgs, OpDef, ShapeCtx, Style, register


def _same(ctx: ShapeCtx) -> TensorType:
    return ctx.x


def keep_if_any_positive(x: torch.Tensor) -> torch.Tensor:
    """Data-dependent: .item() has no meaning on a meta tensor (as a top-k router's choice)."""
    return x * float(x.sum().item() > 0)


def _lower(c: LowerCtx) -> Any:
    return c.call(keep_if_any_positive, c.x)


def _three_copies(args: Any, ins: Any, outs: dict[str, TensorType]) -> Dim:
    out = next(iter(outs.values()))
    n: Dim = 1
    for d in out.shape:
        n = mul(n, d)
    return mul(3, n)


@pytest.fixture
def gate_ops() -> Iterator[None]:
    """Two test-only data-dependent ops: one without an activation rule, one with."""
    ops = [
        OpDef("test_gate", NoArgs, _same, Style("activation", "Gate"), lower=_lower),
        OpDef(
            "test_gate_ruled",
            NoArgs,
            _same,
            Style("activation", "Gate"),
            lower=_lower,
            activations=_three_copies,
        ),
    ]
    for op in ops:
        register(op)
    try:
        yield
    finally:
        for op in ops:
            del REGISTRY[op.name]


def _spec(gate: str) -> dict[str, Any]:
    """Linear, the gate, then a block (a ReLU and a linear) repeated twice."""
    return {
        "archcomp": 1,
        "name": "gated",
        "inputs": {"x": ["B", 8]},
        "dims": {"B": 4},
        "blocks": {
            "layer": {
                "inputs": ["x"],
                "nodes": [
                    {"id": "act", "op": "relu"},
                    {"id": "fc", "op": "linear", "out_features": 8},
                ],
                "outputs": "fc",
            }
        },
        "nodes": [
            {"id": "fc1", "op": "linear", "out_features": 8},
            {"id": "gate", "op": gate},
            {"id": "body", "op": "layer", "repeat": 2},
        ],
        "outputs": {"y": "body"},
    }


def _acts(s: Any) -> dict[str, int | None]:
    return {r.name: r.activation_bytes for r in s.rows}


OUT_BYTES = 4 * 8 * 4  # the gate's output: [B=4, 8] float32


def test_the_other_rows_are_measured_and_the_totals_stay_filled(gate_ops: None) -> None:
    s = archcomp.summary(_spec("test_gate"))
    # the same model with a gate meta can run (the ReLU saves its output, as autograd does)
    ref = archcomp.summary(_spec("relu"))
    acts = _acts(s)
    assert acts["gate"] == OUT_BYTES  # its outputs' size, counted as kept...
    assert acts["body.0.act"] == OUT_BYTES  # downstream of the stand-in: still measured
    assert acts == _acts(ref)  # ...as the ReLU keeps its output (not again by its reader)
    assert s.activation_bytes == sum(v or 0 for v in acts.values()) == ref.activation_bytes
    assert s.training_bytes == ref.training_bytes is not None
    assert s.activation_estimates == {"gate": "output"}


def test_the_estimated_row_is_marked_unknown_in_every_view(gate_ops: None) -> None:
    s = archcomp.summary(_spec("test_gate"))
    table = s.table(None)
    assert re.search(r"^gate +test_gate +\(B, 8\) +- +- +128 B\? +-$", table, re.M)
    assert not re.search(r"^fc1 .*\?", table, re.M)
    assert re.search(r"^  activations +\S+ B .*1 by their outputs' size \(\?\)$", table, re.M)
    body = next(r for r in s.rows_at(0) if r.name == "body")  # the folded repeat holds none
    assert body.activation_source == "trace"
    data = json.loads(json.dumps(s.to_json()))
    gate = next(n for n in data["nodes"] if n["name"] == "gate")
    assert gate["activation_source"] == "output" and gate["activation_bytes"] == OUT_BYTES
    assert "activation_source" not in next(n for n in data["nodes"] if n["name"] == "fc1")
    assert data["memory"]["activation_estimates"] == {"gate": "output"}
    assert data["memory"]["training_bytes"] == s.training_bytes is not None


def test_an_activation_rule_gives_the_row(gate_ops: None) -> None:
    s = archcomp.summary(_spec("test_gate_ruled"))
    assert _acts(s)["gate"] == 3 * OUT_BYTES  # three copies of the output, as declared
    assert s.activation_estimates == {"gate": "rule"}
    assert s.activation_bytes == sum(r.activation_bytes or 0 for r in s.rows)
    assert "128 B?" not in s.table(None) and "384 B" in s.table(None)


def test_checkpointing_counts_the_estimate_inside_a_copy(gate_ops: None) -> None:
    spec = _spec("relu")
    spec["blocks"]["layer"]["nodes"][0]["op"] = "test_gate"  # the gate inside each copy
    s = archcomp.summary(spec, activation_checkpointing=True)
    plain = archcomp.summary(spec)
    assert plain.activation_estimates == {"body.0.act": "output", "body.1.act": "output"}
    acts = _acts(plain)
    assert plain.activation_bytes == sum(v or 0 for v in acts.values())
    # checkpointed: the total less each copy's activations, plus each copy's input and the
    # largest copy while its backward recomputes it (the gate's estimate inside its copy)
    copies = [acts[f"body.{k}.act"] + (acts[f"body.{k}.fc"] or 0) for k in (0, 1)]
    assert copies == [OUT_BYTES, OUT_BYTES]
    want = plain.activation_bytes - sum(copies) + 2 * OUT_BYTES + max(copies)
    assert s.activation_bytes == want
