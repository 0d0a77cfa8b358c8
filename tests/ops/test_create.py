"""Tensors made from sizes (archcomp/ops/create.py): arange, triu, tril. Values and dtypes
against torch; symbolic lengths; errors; and, end to end, the masks and T5 relative positions
they build with no input tables (tests/specs/valid/causal_mask.yaml, t5_relative_buckets.yaml).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lowering import (
    check_declared,
    check_torch,
    compile_for_test,
    fails,
    out,
    run,
    spec,
)
from numerics import assert_same

import archcomp
from archcomp import load_graph
from archcomp.ir import Graph
from archcomp.ir.dims import Sym, add, floordiv, substitute

B, T = (Sym.symbol(n) for n in "BT")
VALID = Path(__file__).resolve().parent.parent / "specs" / "valid"

OPS = {
    "arange": ("shape", "Arange"),
    "triu": ("shape", "Triu"),
    "tril": ("shape", "Tril"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


@pytest.mark.parametrize(
    ("node", "ref"),
    [
        ("op: arange, end: T", lambda x: torch.arange(7)),
        ("op: arange, dim: 1", lambda x: torch.arange(7)),
        ("op: arange, dim: -1", lambda x: torch.arange(3)),
        ("op: arange, end: 5", lambda x: torch.arange(5)),
        ("op: arange, end: T, start: 2, step: 2", lambda x: torch.arange(2, 7, 2)),
        ("op: arange, end: -6, start: 4, step: -3", lambda x: torch.arange(4, -6, -3)),
        ("op: arange, dim: 0, dtype: float32", lambda x: torch.arange(2, dtype=torch.float32)),
        ("op: arange, dim: 1, dtype: int32", lambda x: torch.arange(7, dtype=torch.int32)),
    ],
)
def test_arange_is_torchs(node: str, ref: object) -> None:
    """Lengths from the input's dims at run time: the one graph serves T = 7 (checked here)."""
    text = spec("x: [B, T, 3]", f"- {{id: n, {node}}}")
    g = load_graph(text)
    got = run(compile_for_test(g), torch.randn(2, 7, 3))["y"]
    want = ref(None)  # type: ignore[operator]
    assert_same(got, want)
    assert g.output_types["y"] is not None
    assert g.output_types["y"].dtype == str(want.dtype).removeprefix("torch.")


def test_arange_lengths_are_symbolic() -> None:
    assert out("x: [B, T, 3]", "op: arange, end: T") == (T,)
    assert out("x: [B, T, 3]", "op: arange, dim: 0") == (B,)
    assert out("x: [B, T, 3]", "op: arange, end: T, start: 1") == (add(T, -1),)
    assert out("x: [B, T, 3]", "op: arange, end: T, step: 2") == (floordiv(add(T, 1), 2),)
    assert out("x: [B, T, 3]", "op: arange, end: 10, start: 1, step: 3") == (3,)
    g = load_graph(spec("x: [B, T, 3]", "- {id: n, op: arange, end: T}"))
    code = compile_for_test(g).code
    assert "torch.arange(n_size, dtype = torch.int64, device = n_getattr)" in code, code


def test_arange_runs_on_the_inputs_device_and_on_meta() -> None:
    g = load_graph(spec("x: [B, T, 3]", "- {id: n, op: arange, end: T}"))
    y = compile_for_test(g)(torch.empty(2, 9, 3, device="meta"))
    assert y.device.type == "meta" and tuple(y.shape) == (9,)


@pytest.mark.parametrize("op", ["triu", "tril"])
@pytest.mark.parametrize("diagonal", [0, 1, -2])
def test_triangles_are_torchs(op: str, diagonal: int) -> None:
    fn = getattr(torch, op)
    x = torch.randn(2, 4, 5)
    check_torch(f"op: {op}, diagonal: {diagonal}", lambda x: fn(x, diagonal), {"x": x})
    check_torch(f"op: {op}, diagonal: {diagonal}", lambda x: fn(x, diagonal), {"x": x > 0})


def test_a_wrong_reference_fails() -> None:
    with pytest.raises(AssertionError):
        check_torch("op: triu, diagonal: 1", lambda x: torch.triu(x), {"x": torch.randn(4, 4)})
    with pytest.raises(AssertionError):
        check_torch("op: tril", torch.triu, {"x": torch.randn(4, 4)})


def test_errors_are_located() -> None:
    x = "x: [B, T, 3]"
    fails(x, "op: arange", "arange needs exactly one of end and dim", "arange")
    fails(x, "op: arange, end: T, dim: 1", "arange needs exactly one of end and dim", "T,")
    fails(x, "op: arange, end: S", "'S' is not a dim of the input [B, T, 3]", "S}")
    fails(x, "op: arange, dim: 3", "dim=3 is out of range for a rank-3 tensor", "3}")
    fails(x, "op: arange, end: 4, step: 0", "step must not be 0", "0}")
    fails(
        x,
        "op: arange, end: T, dtype: bool",
        "arange does not make bools (torch refuses it)",
        "bool",
    )
    fails(x, "op: arange, end: 4, start: 4", "arange from 4 to 4 by 1 is empty", "4,")
    fails(
        x,
        "op: arange, end: T, step: -1",
        "a negative step counts down to a concrete end, found symbolic 'T'",
        "-1}",
    )
    fails(
        "x: [B]",
        "op: triu",
        "triu needs a matrix (at least 2 dims), found [B]",
        "triu",
    )


# -- end to end: masks and relative positions with no input tables ---------------------------


def typed_as_run(g: Graph, got: dict[str, torch.Tensor], **sizes: int) -> None:
    """Each output's checked type, at these sizes, is the tensor the run gave."""
    for name, value in got.items():
        t = g.output_types[name]
        assert t is not None
        assert tuple(substitute(d, sizes) for d in t.shape) == tuple(value.shape), name
        assert t.dtype == str(value.dtype).removeprefix("torch."), name


def test_causal_and_sliding_masks_from_arange() -> None:
    g = load_graph(VALID / "causal_mask.yaml")
    for name, want in (("hidden", "[T, T] bool"), ("causal", "[T, T] bool")):
        assert str(g.output_types[name]) == want
    gm = compile_for_test(g)
    torch.manual_seed(0)
    x = torch.randn(2, 9, 8)
    got = run(gm, x)
    ones = torch.ones(9, 9, dtype=torch.bool)
    future, too_far = ones.triu(1), ones.tril(-3)  # window 3: keys 0..2 positions back
    assert_same(got["causal"], future)
    assert_same(got["hidden"], future | too_far)
    scores = (x @ x.transpose(1, 2)) * (1 / 8**0.5)
    weights = torch.softmax(scores.masked_fill(future | too_far, float("-inf")), dim=-1)
    assert_same(got["context"], weights @ x)
    typed_as_run(g, got, B=2, T=9)


@pytest.mark.parametrize("length", [5, 40])
def test_t5_relative_buckets_match_transformers(length: int) -> None:
    from transformers.models.t5.modeling_t5 import T5Attention

    g = load_graph(VALID / "t5_relative_buckets.yaml")
    got = run(compile_for_test(g), torch.randn(2, length, 8))
    pos = torch.arange(length)
    relative = pos[None, :] - pos[:, None]
    assert_same(got["relative"], relative)
    want = T5Attention._relative_position_bucket(relative, True, 32, 128)
    assert_same(got["bucket"], want)
    assert int(got["bucket"].max()) > 16  # the log-spaced buckets were reached (length 40)
    assert got["weights"].dtype == torch.float32 and torch.isfinite(got["weights"]).all()
    typed_as_run(g, got, B=2, T=length)


def test_the_mask_specs_summarise() -> None:
    s = archcomp.summary(VALID / "t5_relative_buckets.yaml")
    assert s.parameters == 32  # the bias table: one per bucket
    rows = {r.name: r for r in s.rows}
    assert {"pos", "bucket", "within", "weights"} <= set(rows)
    assert archcomp.summary(VALID / "causal_mask.yaml").parameters == 0
