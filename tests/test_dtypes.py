"""dtype tracking end to end: int64 ids through comparisons (bool), where and casts into float
compute check, build, run and summarise, with the checked dtype of every node equal to the one
torch gives; float ops refuse bool and integer inputs with a located error; a build in bfloat16
follows the build's dtype through ``cast`` with ``like``; torch.compile, torch.export and the
emitted source agree with the eager model on a graph that builds its own masks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from equivalence import check_compile_export_emit
from lowering import compile_for_test, error_of, run, spec_body, where_on

import archcomp
from archcomp import load_graph
from archcomp.ir.dims import substitute

VALID = Path(__file__).resolve().parent / "specs" / "valid"

IDS_TO_FLOATS = spec_body(
    """
    inputs:
      ids: {shape: [B, T], dtype: int64}
    nodes:
      - {id: padding, op: eq, in: ids, scalar: 0}              # [B, T] bool
      - {id: real, op: logical_not, in: padding}
      - {id: clipped, op: where, in: [real, ids], scalar: 1}   # [B, T] int64, pads -> 1
      - {id: emb, op: embedding, in: clipped, num_embeddings: 10, embedding_dim: 8}
      - {id: keep, op: cast, in: {x: real, like: emb}}         # [B, T] float, follows emb
      - {id: keep3, op: index, in: keep, at: "[:, :, None]"}
      - {id: kept, op: mul, in: [emb, keep3]}
      - {id: counts, op: cumsum, in: real, dim: 1}             # [B, T] int64: positions
      - {id: last, op: argmax, in: counts, dim: 1}             # [B] int64
      - {id: hidden, op: linear, in: kept, out_features: 4}
      - {id: padding3, op: index, in: padding, at: "[:, :, None]"}
      - {id: scores, op: masked_fill, in: {x: hidden, mask: padding3}, value: "-inf"}
      - {id: probs, op: softmax, in: scores, dim: 1}
    outputs: {probs: probs, counts: counts, last: last}
    """
)


def test_int64_ids_through_masks_into_float_compute() -> None:
    g = load_graph(IDS_TO_FLOATS)
    dtypes = {name: str(node.outputs["out"].dtype) for name, node in g.nodes.items()}
    assert dtypes["padding"] == "bool" and dtypes["clipped"] == "int64"
    assert dtypes["keep"] == "float32" and dtypes["counts"] == "int64"
    assert dtypes["last"] == "int64" and dtypes["probs"] == "float32"
    model = compile_for_test(g)
    ids = torch.tensor([[3, 1, 4, 0], [2, 7, 0, 0]])
    got = run(model, ids)
    assert_typed_at(g, got, B=2, T=4)
    assert torch.equal(got["counts"], torch.tensor([[1, 2, 3, 3], [1, 2, 2, 2]]))
    assert torch.equal(got["last"], torch.tensor([2, 1]))
    assert torch.equal(got["probs"][1, 2:], torch.zeros(2, 4))  # padded positions get nothing
    s = archcomp.summary(g)
    assert s.parameters == 10 * 8 + 8 * 4 + 4


def assert_typed_at(g: archcomp.Graph, got: dict[str, torch.Tensor], **sizes: int) -> None:
    for name, value in got.items():
        t = g.output_types[name]
        assert t is not None
        assert tuple(substitute(d, sizes) for d in t.shape) == tuple(value.shape), name
        assert t.dtype == str(value.dtype).removeprefix("torch."), name


def test_a_bfloat16_build_follows_the_build_dtype_through_cast_like() -> None:
    g = load_graph(IDS_TO_FLOATS)
    model = compile_for_test(g, dtype=torch.bfloat16)
    out = run(model, torch.tensor([[3, 1, 0]]))
    assert out["probs"].dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("dtype", "node", "message"),
    [
        ("bool", "op: linear, out_features: 4", "linear needs a floating-point input, found bool"),
        ("bool", "op: softmax", "this op needs a floating-point input, found bool"),
        ("int64", "op: layer_norm", "layer_norm needs a floating-point input, found int64"),
        ("bool", "op: exp", "exp needs a floating-point input, found bool"),
        ("float32", "op: embedding, num_embeddings: 4, embedding_dim: 2",
         "embedding needs integer ids (int64), found float32"),
        ("int64", "op: logical_not", "logical_not needs a bool x, found int64"),
    ],
)  # fmt: skip
def test_float_ops_refuse_masks_and_ids(dtype: str, node: str, message: str) -> None:
    text = spec_body(
        f"""
        inputs:
          x: {{shape: [B, T, 8], dtype: {dtype}}}
        nodes:
          - {{id: n, {node}}}
        outputs: n
        """
    )
    got, line, col = error_of(text)
    assert got == message
    op = node.split(",")[0].removeprefix("op: ")
    assert (line, col) == where_on(text, "{id: n", op)  # the caret at the op's name


def test_a_bool_hint_says_how_to_use_a_mask() -> None:
    text = spec_body(
        """
        inputs:
          x: {shape: [B, T], dtype: bool}
        nodes:
          - {id: n, op: softmax}
        outputs: n
        """
    )
    with pytest.raises(archcomp.SpecError) as info:
        load_graph(text)
    assert "masked_fill or where" in (info.value.diagnostics[0].hint or "")


def test_masks_built_in_the_graph_compile_export_and_emit(tmp_path: Path) -> None:
    for name in ("causal_mask.yaml", "t5_relative_buckets.yaml"):
        model = compile_for_test(load_graph(VALID / name))
        model.eval()
        check_compile_export_emit(model, (torch.randn(2, 11, 8),), tmp_path)


SWEEP = [
    "op: log",
    "op: floor",
    "op: abs",
    "op: cumsum, dim: 1",
    "op: argmax, dim: 1",
    "op: topk, k: 2",
    "op: triu",
    "op: roll, shifts: 1, dims: 1",
    "op: pad, pad: [1, 1], value: 1",
    "op: pad, pad: [1, 1], mode: replicate",
    "op: minimum, scalar: 1",
    "op: maximum, in: [x, x]",
    "op: gt, scalar: 0",
    "op: eq, in: [x, x]",
    "op: logical_not",
    "op: logical_or, in: [x, x]",
    "op: masked_fill, in: [x, m], value: 1",
    "op: where, in: [m, x], scalar: 0",
    "op: where, in: [m, x, x]",
    "op: gather, in: [x, i], dim: 1",
    "op: scatter_add, in: [x, i, x], dim: 1",
    "op: cast, dtype: float16",
    "op: cast, in: {x: x, like: i}",
    "op: one_hot, num_classes: 4",
    "op: arange, dim: 1",
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int64", "int32", "bool"])
def test_checked_dtypes_are_the_ones_torch_gives(dtype: str) -> None:
    """Every new op on every input dtype: refused at check time, or run with the checked type
    (shape and dtype) exactly what torch gives; never a run-time failure after a clean check."""
    x = torch.tensor([[1, 0, 3], [2, 2, 0]]).to(getattr(torch, dtype))
    m, i = torch.tensor([[True, False, True]]), torch.tensor([[0, 2, 1], [1, 1, 0]])
    for node in SWEEP:
        text = spec_body(
            f"""
            inputs:
              x: {{shape: [2, 3], dtype: {dtype}}}
              m: {{shape: [1, 3], dtype: bool}}
              i: {{shape: [2, 3], dtype: int64}}
            nodes:
              - {{id: n, {node}}}
              - {{id: used, op: concat, in: [m]}}
              - {{id: used_i, op: concat, in: [i]}}
            outputs: {{y: n, m: used, i: used_i}}
            """
        )
        try:
            g = load_graph(text)
        except archcomp.SpecError:
            continue
        got = run(compile_for_test(g), x, m, i)
        t = g.output_types["y"]
        assert t is not None and t.dtype == str(got["y"].dtype).removeprefix("torch."), node
        assert t.shape == tuple(got["y"].shape), node
