"""Selection by index (archcomp/ops/select.py): gather, argmax, argmin, topk, scatter_add,
index_add, one_hot. Values, dtypes and gradients against the torch calls on the same tensors;
shapes, the int64 rule for indices, and located errors.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lowering import check_declared, check_torch, compile_for_test, fails, out, spec

from archcomp import load_graph
from archcomp.ir.dims import Sym

B, T = (Sym.symbol(n) for n in "BT")

OPS = {
    "gather": ("shape", "Gather"),
    "argmax": ("shape", "ArgMax"),
    "argmin": ("shape", "ArgMin"),
    "topk": ("shape", "Top-k"),
    "scatter_add": ("shape", "Scatter Add"),
    "index_add": ("shape", "Index Add"),
    "one_hot": ("shape", "One-Hot"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _index(high: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=_gen())


def test_gather_is_torchs_with_gradients() -> None:
    x = torch.randn(2, 5, 6, generator=_gen())
    check_torch(
        "op: gather, in: [x, i], dim: -1",
        lambda x, i: torch.gather(x, -1, i),
        {"x": x, "i": _index(6, 2, 5, 3)},
    )
    check_torch(  # a smaller index in the other dims, as torch allows
        "op: gather, in: [x, i], dim: 1",
        lambda x, i: torch.gather(x, 1, i),
        {"x": x, "i": _index(5, 1, 7, 2)},
    )


@pytest.mark.parametrize("op", ["argmax", "argmin"])
@pytest.mark.parametrize("keepdim", [False, True])
def test_argmax_argmin_are_torchs_and_give_int64(op: str, keepdim: bool) -> None:
    fn = getattr(torch, op)
    x = torch.randn(3, 4, 5, generator=_gen())
    check_torch(
        f"op: {op}, dim: 1, keepdim: {str(keepdim).lower()}",
        lambda x: fn(x, 1, keepdim=keepdim),
        {"x": x},
    )
    check_torch(f"op: {op}, dim: -1", lambda x: fn(x, -1), {"x": x.long()})


@pytest.mark.parametrize(
    ("args", "k", "kw"),
    [
        ("", 2, {}),
        (", dim: 1", 3, {"dim": 1}),
        (", largest: false", 2, {"largest": False}),
        (", sorted: false", 5, {"sorted": False}),
    ],
)
def test_topk_values_and_indices_are_torchs(args: str, k: int, kw: dict[str, Any]) -> None:
    """Both results, and the gradient through the values (the indices have none)."""
    x = torch.randn(3, 4, 5, generator=_gen())

    def ref(x: torch.Tensor) -> dict[str, torch.Tensor]:
        values, indices = torch.topk(x, k, **kw)
        return {"y": values, "i": indices}

    g = check_torch(f"op: topk, k: {k}{args}", ref, {"x": x}, "{y: n.values, i: n.indices}")
    assert str(g.output_types["i"]).endswith("int64")


def test_scatter_add_and_index_add_are_torchs_with_gradients() -> None:
    x, src = torch.randn(3, 6, generator=_gen()), torch.randn(3, 4, generator=_gen())
    check_torch(
        "op: scatter_add, in: [x, i, s], dim: 1",
        lambda x, i, s: torch.scatter_add(x, 1, i, s),
        {"x": x, "i": _index(6, 3, 4), "s": src},  # repeated indices add up
    )
    rows = torch.randn(5, 4, generator=_gen())
    check_torch(
        "op: index_add, in: [x, i, s], dim: 0",
        lambda x, i, s: torch.index_add(x, 0, i, s),
        {"x": torch.randn(3, 4, generator=_gen()), "i": _index(3, 5), "s": rows},
    )


def test_one_hot_is_torchs() -> None:
    g = check_torch(
        "op: one_hot, num_classes: 7",
        lambda i: torch.nn.functional.one_hot(i, 7),
        {"i": _index(7, 2, 5)},
    )
    assert str(g.output_types["y"]) == "[2, 5, 7] int64"


def test_a_router_reads_as_written() -> None:
    """Top-2 routing with no faked mask: the chosen experts, their weights, a one-hot mask."""
    g = load_graph(
        spec(
            "x: [B, T, 8]",
            """
            - {id: logits, op: linear, out_features: 4}
            - {id: router, op: topk, k: 2}
            - {id: weights, op: softmax, in: router.values}
            - {id: chosen, op: one_hot, in: router.indices, num_classes: 4}
            - {id: n, op: cast, in: {x: chosen, like: weights}}
            """,
            "{y: n, w: weights}",
        )
    )
    assert str(g.output_types["y"]) == "[B, T, 2, 4] float32"
    code = compile_for_test(g).code
    for line in ("router_topk = torch.topk(logits, 2, -1)", "router_values = router_topk[0]"):
        assert line in code, code


def test_a_wrong_reference_fails() -> None:
    x, i = torch.randn(4, 4, generator=_gen()), _index(4, 4, 4)
    with pytest.raises(AssertionError):
        check_torch("op: gather, in: [x, i], dim: 1", lambda x, i: torch.gather(x, 0, i),
                    {"x": x, "i": i})  # fmt: skip
    with pytest.raises(AssertionError):
        check_torch("op: argmax, dim: 1", lambda x: torch.argmin(x, 1), {"x": x})
    with pytest.raises(AssertionError):
        check_torch("op: topk, k: 2", lambda x: torch.topk(x, 2, largest=False)[0], {"x": x},
                    "{y: n.values}")  # fmt: skip


def test_shapes_are_symbolic() -> None:
    assert out("x: [B, T, 8]", "op: topk, k: 2", "y") == (B, T, 2)
    assert out("x: [B, T, 8]", "op: argmax, dim: 1") == (B, 8)
    assert out("x: {shape: [B, T], dtype: int64}", "op: one_hot, num_classes: 3") == (B, T, 3)
    ins = "x: [B, T, 8]\n  i: {shape: [B, T, 2], dtype: int64}"
    assert out(ins, "op: gather, in: [x, i], dim: 2") == (B, T, 2)


def _ins(x: str, index: str, dtype: str = "int64") -> str:
    return f"x: {x}\n  i: {{shape: {index}, dtype: {dtype}}}"


def test_errors_are_located() -> None:
    fails(
        _ins("[B, T, 8]", "[B, T, 2]", "float32"),
        "op: gather, in: [x, i], dim: 2",
        "gather needs int64 indices in index, found float32",
        "[x",
    )
    fails(
        _ins("[B, T, 8]", "[B, T, 9]"), "op: gather, in: [x, i], dim: 1",
        "index [B, T, 9] is larger than x [B, T, 8] at dim 2 (9 vs 8)", "[x",
    )  # fmt: skip
    fails(
        _ins("[B, T, 8]", "[B, 4, 2]"), "op: gather, in: [x, i], dim: 2",
        "index [B, 4, 2] may be larger than x [B, T, 8] at dim 1 (4 vs T)", "[x",
    )  # fmt: skip
    fails("x: [B, T, 8]", "op: topk, k: 9", "k=9 is larger than dim 2 of [B, T, 8] (8)", "9}")
    fails(
        "x: [B, T, 8]", "op: topk, k: 2, dim: 3", "dim=3 is out of range for a rank-3 tensor", "3}"
    )
    fails(
        "x: {shape: [B, T], dtype: bool}", "op: argmax, dim: 1",
        "argmax does not take a bool tensor (torch refuses it)", "argmax",
    )  # fmt: skip
    fails(
        "x: [B, T]",
        "op: one_hot, num_classes: 4",
        "one_hot needs int64 indices in x, found float32",
        "one_hot",
    )
    fails(
        "x: [B, T, 8]\n  i: {shape: [B, 2], dtype: int64}", "op: gather, in: [x, i], dim: 1",
        "index [B, 2] and x [B, T, 8] have different ranks", "[x",
    )  # fmt: skip
    fails(
        "x: [B, 8]\n  i: {shape: [B, 2], dtype: int64}\n  s: {shape: [B, 2], dtype: float64}",
        "op: scatter_add, in: [x, i, s], dim: 1",
        "scatter_add: src is float64 but x is float32", "[x",
    )  # fmt: skip
    fails(
        "x: [B, 8]\n  i: {shape: [B, 4], dtype: int64}\n  s: [B, 2]",
        "op: scatter_add, in: [x, i, s], dim: 1",
        "index [B, 4] is larger than src [B, 2] at dim 1 (4 vs 2)", "[x",
    )  # fmt: skip
    fails(
        "x: [8, 4]\n  i: {shape: [3], dtype: int64}\n  s: [3, 5]",
        "op: index_add, in: [x, i, s], dim: 0",
        "src is [3, 5]; index_add along dim 0 of x [8, 4] with 3 indices needs [3, 4]", "[x",
    )  # fmt: skip
    fails(
        "x: [8, 4]\n  i: {shape: [3, 1], dtype: int64}\n  s: [3, 4]",
        "op: index_add, in: [x, i, s], dim: 0",
        "index_add needs a 1-D index, found [3, 1]", "[x",
    )  # fmt: skip
