"""Tensor ops: shape ops (flatten ... scale), convolutions, pooling, norms and dropout.

Shape inference on concrete and symbolic inputs, located errors, parameter and buffer shapes
against the real torch modules, MACs, and numerics of each lowering against torch. Lowerings go
through the real compiler (archcomp/backends/torch, via tests/lowering.py), as users run them.
"""

from __future__ import annotations

import operator
import textwrap
from collections.abc import Callable

import numerics
import pytest
import torch
import torch.nn.functional as F
from lowering import check_declared, compile_for_test, run
from numerics import Tolerance, assert_same
from torch import nn

from archcomp import SpecError, load_graph
from archcomp.backends.torch.module import ArchModule
from archcomp.ir import Graph, Ref, TensorType
from archcomp.ir.dims import Dim, Sym, add, floordiv, mul, substitute
from archcomp.ops import get_op
from archcomp.ops.shape import parse_index

B, S, T, H, W = (Sym.symbol(n) for n in "BSTHW")


def spec(inputs: str, nodes: str, outputs: str = "{y: n}") -> str:
    """A one-file spec; ``nodes`` is the body of the nodes list (one node per line)."""
    body = textwrap.dedent(nodes).strip("\n")
    lines = "\n".join("  " + ln for ln in body.splitlines())
    return (
        f"archcomp: 1\nname: m\ninputs:\n  {inputs.strip()}\nnodes:\n{lines}\noutputs: {outputs}\n"
    )


def out(inputs: str, node: str, result: str = "y") -> tuple[Dim, ...]:
    """The output shape of a one-node spec (the node is ``n``)."""
    g = load_graph(spec(inputs, f"- {{id: n, {node}}}"))
    t = g.output_types[result]
    assert t is not None
    return t.shape


def error_of(text: str) -> tuple[str, int, int]:
    """The single diagnostic of a failing spec: message, line, column."""
    with pytest.raises(SpecError) as info:
        load_graph(text)
    diags = info.value.diagnostics
    assert len(diags) == 1, info.value.format()
    d = diags[0]
    assert d.loc is not None
    return d.message, d.loc.line, d.loc.col


def where(text: str, token: str) -> tuple[int, int]:
    """1-based line and column of the first ``token`` on the line of node ``n``."""
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if "{id: n," in ln)
    assert token in lines[i], (token, lines[i])
    return i + 1, lines[i].index(token) + 1


def fails(inputs: str, node: str, message: str, at: str) -> None:
    """A one-node spec fails with exactly ``message``, pointing at token ``at``."""
    text = spec(inputs, f"- {{id: n, {node}}}")
    assert error_of(text) == (message, *where(text, at))


# -- lowering through the real compiler ------------------------------------------------------------


def compile_spec(text: str) -> tuple[Graph, ArchModule]:
    g = load_graph(text)
    gm = compile_for_test(g)
    check_state(g, gm)
    return g, gm


def check_state(g: Graph, gm: ArchModule) -> None:
    """params= and buffers= match the lowered modules' state exactly (names and shapes)."""
    for name, node in g.nodes.items():
        path = gm.node_meta[name]["module"]  # where the compiler registered the node's module
        m = gm.get_submodule(path) if path is not None else None
        params = {k: tuple(p.shape) for k, p in m.named_parameters()} if m else {}
        buffers = {k: tuple(b.shape) for k, b in m.named_buffers()} if m else {}
        assert node.op.param_shapes(node.args) == params, name
        assert node.op.buffer_shapes(node.args) == buffers, name


def macs(g: Graph, name: str) -> Dim:
    node = g.nodes[name]
    assert node.op.macs is not None
    ins = {p: g.type_of(r) for p, r in node.inputs.items() if isinstance(r, Ref)}
    return node.op.macs(node.args, ins, node.outputs)


# -- declarations ----------------------------------------------------------------------------

OPS = {
    "flatten": ("shape", "Flatten"),
    "reshape": ("shape", "Reshape"),
    "transpose": ("shape", "Transpose"),
    "permute": ("shape", "Permute"),
    "index": ("shape", "Index"),
    "concat": ("shape", "Concat"),
    "split": ("shape", "Split"),
    "matmul": ("linear", "MatMul"),
    "scale": ("arith", "Scale"),
    "conv1d": ("conv", "Conv"),
    "conv2d": ("conv", "Conv"),
    "max_pool1d": ("pool", "Max Pool"),
    "max_pool2d": ("pool", "Max Pool"),
    "avg_pool1d": ("pool", "Avg Pool"),
    "avg_pool2d": ("pool", "Avg Pool"),
    "adaptive_avg_pool1d": ("pool", "Adaptive Avg Pool"),
    "adaptive_avg_pool2d": ("pool", "Adaptive Avg Pool"),
    "adaptive_max_pool1d": ("pool", "Adaptive Max Pool"),
    "adaptive_max_pool2d": ("pool", "Adaptive Max Pool"),
    "layer_norm": ("norm", "Layer Norm"),
    "batch_norm": ("norm", "Batch Norm"),
    "dropout": ("dropout", "Dropout"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def test_split_declares_sixteen_results() -> None:
    op = get_op("split")
    assert op is not None
    assert op.results == tuple(f"out{i}" for i in range(16))


# -- flatten, reshape, transpose, permute ----------------------------------------------------


def test_flatten_shapes() -> None:
    assert out("x: [B, 3, 4, 5]", "op: flatten") == (B, 60)
    assert out("x: [B, C, H, W]", "op: flatten") == (B, mul(mul(Sym.symbol("C"), H), W))
    assert out("x: [B, 3, 4, 5]", "op: flatten, start_dim: 2") == (B, 3, 20)
    assert out("x: [B, 3, 4, 5]", "op: flatten, start_dim: 0, end_dim: 1") == (mul(B, 3), 4, 5)
    assert out("x: [B, 3, 4, 5]", "op: flatten, start_dim: -2, end_dim: -2") == (B, 3, 4, 5)


def test_flatten_errors() -> None:
    fails(
        "x: [B, 3, 4]",
        "op: flatten, start_dim: 2, end_dim: 1",
        "end_dim=1 comes before start_dim=2 in a rank-3 tensor",
        "1}",
    )
    fails("x: [B]", "op: flatten", "start_dim=1 is out of range for a rank-1 tensor", "flatten")


def test_reshape_shapes() -> None:
    assert out("x: [B, S, 512]", "op: reshape, shape: [B, S, 8, 64]") == (B, S, 8, 64)
    assert out("x: [B, S, 512]", "op: reshape, shape: [-1, 512]") == (mul(B, S), 512)
    assert out("x: [B, S, 512]", "op: reshape, shape: [B, -1]") == (B, mul(S, 512))
    assert out("x: [B, S, 512]", "op: reshape, shape: [S, B, -1, 2]") == (S, B, 256, 2)
    assert out("x: [2, 6]", "op: reshape, shape: [3, -1]") == (3, 4)
    assert out("x: [2, 6]", "op: reshape, shape: [12]") == (12,)
    assert out("x: [B, 6]", "op: reshape, shape: [B, 2, 3]") == (B, 2, 3)


def test_reshape_keeps_symbolic_products_from_flatten() -> None:
    text = spec(
        "x: [B, S, 8, 64]",
        """
        - {id: f, op: flatten, start_dim: 0, end_dim: 1}
        - {id: n, op: reshape, shape: [-1, 8, 64]}
        """,
    )
    assert load_graph(text).output_types["y"] == TensorType((mul(B, S), 8, 64))


def test_reshape_errors() -> None:
    fails(
        "x: [2, 6]",
        "op: reshape, shape: [5, 3]",
        "cannot reshape [2, 6] (12 elements) to [5, 3] (15 elements)",
        "[5",
    )
    fails(
        "x: [B, 6]",
        "op: reshape, shape: [-1, 4]",
        "cannot reshape [B, 6] to [-1, 4]: its 6*B elements are not a multiple of 4",
        "[-1",
    )
    fails(
        "x: [B, S, 6]",
        "op: reshape, shape: [B, 6]",
        "cannot reshape [B, S, 6] (6*B*S elements) to [B, 6] (6*B elements)",
        "[B",
    )
    fails("x: [B, 6]", "op: reshape, shape: [S, 6]", "'S' is not a dim of the input [B, 6]", "[S")
    fails("x: [2, 6]", "op: reshape, shape: [-1, -1]", "shape has more than one -1", "[-1")
    fails(
        "x: [2, 6]",
        "op: reshape, shape: [0, 12]",
        "shape has size 0; sizes are positive, or -1",
        "[0",
    )


def test_transpose_and_permute_shapes() -> None:
    assert out("x: [B, S, 512]", "op: transpose, dim0: 1, dim1: 2") == (B, 512, S)
    assert out("x: [B, S, 512]", "op: transpose, dim0: -1, dim1: 0") == (512, S, B)
    assert out("x: [B, S, 8, 64]", "op: permute, dims: [0, 2, 1, 3]") == (B, 8, S, 64)
    assert out("x: [B, S, 8]", "op: permute, dims: [-1, 0, 1]") == (8, B, S)


def test_transpose_and_permute_errors() -> None:
    fails(
        "x: [B, S]",
        "op: transpose, dim0: 0, dim1: 2",
        "dim1=2 is out of range for a rank-2 tensor",
        "2}",
    )
    fails(
        "x: [B, S, 8]",
        "op: permute, dims: [0, 1]",
        "dims has 2 entries for a rank-3 input [B, S, 8]",
        "[0",
    )
    fails(
        "x: [B, S, 8]",
        "op: permute, dims: [0, 1, -2]",
        "dims [0, 1, -2] is not a permutation of 0..2: each dim exactly once",
        "[0",
    )


# -- index -----------------------------------------------------------------------------------


def test_parse_index() -> None:
    assert parse_index("[:, -1, :]") == (slice(None), -1, slice(None))
    assert parse_index("[..., 0]") == (..., 0)
    assert parse_index(" 1:5:2 , None, ::3") == (slice(1, 5, 2), None, slice(None, None, 3))
    assert parse_index("[0,]") == (0,)
    assert parse_index(-1) == (-1,)
    assert parse_index([":", -1, "2:", None, "..."]) == (slice(None), -1, slice(2, None), None, ...)


@pytest.mark.parametrize(
    ("at", "message"),
    [
        ("'[:, a]'", "'a' in index '[:, a]' is not an int"),
        ("'[:, __import__(1)]'", "'__import__(1)' in index '[:, __import__(1)]' is not an int"),
        ("'[:, 1:2:3:4]'", "'1:2:3:4' in index '[:, 1:2:3:4]' has too many ':'"),
        ("'[::0]'", "slice step must be positive, found 0"),
        ("'[..., 0, ...]'", "an index can have only one '...'"),
        ("'[:, -1'", "unbalanced brackets in index '[:, -1'"),
        ("'[]'", "empty item in index '[]'"),
        ("'[0,,1]'", "empty item in index '[0,,1]'"),
        ("[':, 1']", "':, 1': one index item per list entry"),
        ("[]", "the index is empty"),
    ],
)
def test_index_syntax_errors(at: str, message: str) -> None:
    fails("x: [B, 4, 5]", f"op: index, at: {at}", message, at[:2])


def test_index_shapes() -> None:
    x = "x: [B, S, 512]"
    assert out(x, "op: index, at: '[:, -1, :]'") == (B, 512)
    assert out(x, "op: index, at: '[:, -1]'") == (B, 512)
    assert out(x, "op: index, at: '[..., 0]'") == (B, S)
    assert out(x, "op: index, at: [':', 0]") == (B, 512)
    assert out(x, "op: index, at: '[:, :, 1:5]'") == (B, S, 4)
    assert out(x, "op: index, at: '[..., ::2]'") == (B, S, 256)
    assert out(x, "op: index, at: '[..., -10:]'") == (B, S, 10)
    assert out(x, "op: index, at: '[..., 500:1000]'") == (B, S, 12)  # clamped, like Python
    assert out(x, "op: index, at: '[:, None]'") == (B, 1, S, 512)
    assert out(x, "op: index, at: '[0]'") == (S, 512)
    # symbolic dims: bounds assumed inside the dim
    assert out(x, "op: index, at: '[:, 1:]'") == (B, add(S, -1), 512)
    assert out(x, "op: index, at: '[:, :-1]'") == (B, add(S, -1), 512)
    assert out(x, "op: index, at: '[:, -3:]'") == (B, Sym.symbol("S[-3:]"), 512)  # min(S, 3)
    assert out(x, "op: index, at: '[:, :16]'") == (B, Sym.symbol("S[:16]"), 512)  # min(S, 16)
    assert out(x, "op: index, at: '[:, :4]'") == (B, Sym.symbol("S[:4]"), 512)
    assert out(x, "op: index, at: '[:, ::2]'") == (B, floordiv(add(S, 1), 2), 512)
    assert out(x, "op: index, at: '[:, 1:-1]'") == (B, add(S, -2), 512)
    assert out(x, "op: index, at: '[:, -5:-2]'") == (B, Sym.symbol("S[-5:-2]"), 512)


def test_index_range_errors() -> None:
    fails(
        "x: [B, 6]",
        "op: index, at: '[:, 6]'",
        "index 6 is out of range for dim 1 (size 6)",
        "'[",
    )
    fails(
        "x: [B, 6]",
        "op: index, at: [':', -7]",
        "index -7 is out of range for dim 1 (size 6)",
        "[':'",
    )
    fails("x: [B, 6]", "op: index, at: '[:, 4:2]'", "slice 4:2 of dim 1 (size 6) is empty", "'[")
    fails("x: [B, S]", "op: index, at: '[:, 3:1]'", "slice 3:1 of dim 1 is empty", "'[")
    fails(
        "x: [B, S]",
        "op: index, at: '[:, -3:5]'",
        "slice -3:5 of dim 1 needs a concrete size, found symbolic 'S'",
        "'[",
    )
    fails("x: [B, S]", "op: index, at: '[:, ١]'", "'١' in index '[:, ١]' is not an int", "'[")
    fails(
        "x: [B, 6]",
        "op: index, at: '[0, 1, 2]'",
        "index has 3 entries for a rank-2 input [B, 6]",
        "'[",
    )


# -- concat, split ---------------------------------------------------------------------------


def test_concat_shapes() -> None:
    text = spec(
        "x: [B, S, 64]\n  z: [B, T, 64]",
        "- {id: n, op: concat, in: [x, z], dim: 1}\n- {id: m, op: concat, in: [x, x, x]}",
        "{y: n, w: m}",
    )
    types = load_graph(text).output_types
    assert types["y"] == TensorType((B, add(S, T), 64))
    assert types["w"] == TensorType((B, S, 192))


def test_concat_errors() -> None:
    text = spec("x: [B, S, 64]\n  z: [B, S, 32]", "- {id: n, op: concat, in: [x, z], dim: 1}")
    msg = "inputs [B, S, 64] and [B, S, 32] differ at dim 2 (64 vs 32); only dim 1 may differ"
    line = text.splitlines().index("  - {id: n, op: concat, in: [x, z], dim: 1}") + 1
    assert error_of(text) == (msg, line, text.splitlines()[line - 1].index("[x") + 1)
    text = spec("x: [B, S, 64]\n  z: [B, 64]", "- {id: n, op: concat, in: [x, z]}")
    assert error_of(text)[0] == "inputs have different ranks: [B, S, 64] and [B, 64]"
    text = spec(
        "x: [B, 64]\n  z: {shape: [B, 64], dtype: int64}", "- {id: n, op: concat, in: [x, z]}"
    )
    assert error_of(text)[0] == "inputs have different dtypes: float32, int64"


def test_split_shapes() -> None:
    text = spec(
        "x: [B, S, 96]",
        "- {id: n, op: split, sizes: [32, 64]}\n- {id: m, op: split, in: x, chunks: 3, dim: 2}",
        "{a: n.out0, b: n.out1, c: m.out2, d: n}",
    )
    types = load_graph(text).output_types
    assert types["a"] == TensorType((B, S, 32))
    assert types["b"] == TensorType((B, S, 64))
    assert types["c"] == TensorType((B, S, 32))
    assert types["d"] == types["a"]  # a bare reference is the first result


def test_split_symbolic_chunks_undo_concat() -> None:
    text = spec(
        "x: [B, D]",
        """
        - {id: qkv, op: concat, in: [x, x, x]}
        - {id: n, op: split, chunks: 3}
        """,
        "{q: n.out0, v: n.out2}",
    )
    types = load_graph(text).output_types
    assert types["q"] == types["v"] == TensorType((B, Sym.symbol("D")))


def test_split_errors() -> None:
    fails("x: [2, 6]", "op: split, sizes: [2, 3]", "sizes sum to 5 but dim 1 has size 6", "[2")
    fails(
        "x: [2, 6]",
        "op: split, chunks: 4",
        "dim 1 (size 6) does not split into 4 equal chunks",
        "4}",
    )
    fails(
        "x: [2, S]",
        "op: split, chunks: 2",
        "dim 1 (size S) does not split into 2 equal chunks",
        "2}",
    )
    fails(
        "x: [2, 6]",
        "op: split, chunks: 2, sizes: [3, 3]",
        "split needs exactly one of sizes (a list) and chunks (an int)",
        "2,",
    )
    fails(
        "x: [2, S]",
        "op: split, sizes: [1, 2]",
        "the split dim (1) must be a concrete size, found symbolic 'S'",
        "split",
    )
    fails(
        "x: [2, 6]",
        "op: split, chunks: 17",
        "'chunks': input should be less than or equal to 16, found 17",
        "17",
    )


# -- matmul, scale ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "shape"),
    [
        ("[B, S, 64]", "[B, 64, T]", (B, S, T)),
        ("[B, 8, S, 64]", "[64, T]", (B, 8, S, T)),
        ("[B, 1, S, 64]", "[8, 64, S]", (B, 8, S, S)),
        ("[S, 64]", "[64]", (S,)),
        ("[64]", "[B, 64, T]", (B, T)),
        ("[64]", "[64]", ()),
    ],
)
def test_matmul_shapes(a: str, b: str, shape: tuple[Dim, ...]) -> None:
    text = spec(f"a: {a}\n  b: {b}", "- {id: n, op: matmul, in: [a, b]}")
    assert load_graph(text).output_types["y"] == TensorType(shape)


def test_matmul_errors_and_macs() -> None:
    text = spec("a: [B, S, 64]\n  b: [B, 32, T]", "- {id: n, op: matmul, in: {a: a, b: b}}")
    msg = "inner dims differ: a [B, S, 64] has 64 columns, b [B, 32, T] has 32 rows"
    assert error_of(text) == (msg, *where(text, "b}"))
    text = spec("a: [B, S, 64]\n  b: [2, 64, T]", "- {id: n, op: matmul, in: [a, b]}")
    assert error_of(text)[0] == (
        "batch dims of a [B, S, 64] and b [2, 64, T] do not broadcast ([B] vs [2])"
    )
    g = load_graph(spec("a: [B, S, 64]\n  b: [B, 64, T]", "- {id: n, op: matmul, in: [a, b]}"))
    assert macs(g, "n") == mul(mul(mul(B, S), T), 64)


def test_scale() -> None:
    assert out("x: [B, 4]", "op: scale, factor: 0.125") == (B, 4)
    assert out("x: [B, 4]", "op: scale, factor: 2") == (B, 4)  # an int is a float here
    fails(
        "x: {shape: [B, 4], dtype: int64}",
        "op: scale, factor: 2.0",
        "scale needs a floating-point input, found int64",
        "scale",
    )


# -- conv --------------------------------------------------------------------------------------


def test_conv_shapes() -> None:
    assert out("x: [B, 3, 32, 32]", "op: conv2d, out_channels: 8, kernel_size: 3") == (B, 8, 30, 30)
    assert out(
        "x: [B, 3, 32, 32]", "op: conv2d, out_channels: 8, kernel_size: 3, padding: 1, stride: 2"
    ) == (B, 8, 16, 16)
    assert out(
        "x: [B, 3, 32, 20]", "op: conv2d, out_channels: 8, kernel_size: [5, 3], padding: [2, 0]"
    ) == (B, 8, 32, 18)
    assert out("x: [B, 3, 32, 32]", "op: conv2d, out_channels: 8, kernel_size: 3, dilation: 2") == (
        B,
        8,
        28,
        28,
    )
    assert out(
        "x: [B, 3, 32, 31]", "op: conv2d, out_channels: 8, kernel_size: 4, padding: same"
    ) == (B, 8, 32, 31)
    assert out(
        "x: [B, 3, 32, 31]", "op: conv2d, out_channels: 8, kernel_size: 3, padding: valid"
    ) == (
        B,
        8,
        30,
        29,
    )
    assert out("x: [B, 16, 100]", "op: conv1d, out_channels: 4, kernel_size: 5, stride: 3") == (
        B,
        4,
        32,
    )


def test_conv_symbolic_spatial_dims_stay_symbolic() -> None:
    shape = out("x: [B, 3, H, W]", "op: conv2d, out_channels: 8, kernel_size: 3, padding: 1")
    assert shape == (B, 8, H, W)
    shape = out("x: [B, 3, H, W]", "op: conv2d, out_channels: 8, kernel_size: 3, stride: 2")
    assert shape == (B, 8, add(floordiv(add(H, -3), 2), 1), add(floordiv(add(W, -3), 2), 1))
    assert str(shape[2]) == "floor((H - 3)/2) + 1"
    shape = out("x: [B, 3, L]", "op: conv1d, out_channels: 8, kernel_size: 3, padding: same")
    assert shape == (B, 8, Sym.symbol("L"))


def test_conv_infers_in_channels_and_params_and_macs() -> None:
    g = load_graph(
        spec(
            "x: [B, 6, 32, 32]", "- {id: n, op: conv2d, out_channels: 8, kernel_size: 3, groups: 2}"
        )
    )
    node = g.nodes["n"]
    assert node.args.in_channels == 6  # type: ignore[attr-defined]
    assert node.op.param_shapes(node.args) == {"weight": (8, 3, 3, 3), "bias": (8,)}
    assert macs(g, "n") == mul(B, 8 * 30 * 30 * 3 * 9)
    g = load_graph(
        spec("x: [B, 4, L]", "- {id: n, op: conv1d, out_channels: 2, kernel_size: 5, bias: false}")
    )
    node = g.nodes["n"]
    assert node.op.param_shapes(node.args) == {"weight": (2, 4, 5)}


def test_conv_errors() -> None:
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: 9",
        "kernel_size 9 is larger than the input along dim 2 (size 8)",
        "9}",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: [3, 12], padding: 1",
        "kernel_size 12 is larger than the input along dim 3 (size 8 + 2*1 padding)",
        "[3",
    )
    fails(
        "x: [B, 3, 8]",
        "op: conv1d, out_channels: 4, kernel_size: 3, dilation: 4",
        "kernel_size 3 (dilated to 9) is larger than the input along dim 2 (size 8)",
        "3,",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: 3, groups: 2",
        "groups=2 must divide in_channels (3) and out_channels (4)",
        "2}",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: 3, stride: 0",
        "'stride': input should be greater than 0, found 0",
        "0}",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: [3, 3, 3]",
        "kernel_size has 3 values, this op needs 2",
        "[3",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: conv2d, out_channels: 4, kernel_size: 3, stride: 2, padding: same",
        "padding 'same' needs stride 1 (torch does not support it for strided convs)",
        "same",
    )
    fails(
        "x: [B, 3, 8]",
        "op: conv2d, out_channels: 4, kernel_size: 3",
        "conv2d (B, C, H, W) expects a rank-4 input, found [B, 3, 8]",
        "conv2d",
    )
    fails(
        "x: [B, C, 8]",
        "op: conv1d, out_channels: 4, kernel_size: 3",
        "the channel dim (dim 1) must be a concrete size, found symbolic 'C'",
        "conv1d",
    )
    fails(
        "x: [B, 3, 8]",
        "op: conv1d, out_channels: 4, kernel_size: 3, in_channels: 4",
        "in_channels is 4 but the input gives 3",
        "4}",
    )
    fails(
        "x: [B, 3, 8]",
        "op: conv1d, out_channels: 4, kernel_size: 3, padding_mode: reflect",
        "'padding_mode': expected 'zeros', found string 'reflect'",
        "reflect",
    )


# -- pooling ---------------------------------------------------------------------------------


def test_pool_shapes() -> None:
    x = "x: [B, 3, 32, 31]"
    assert out(x, "op: max_pool2d, kernel_size: 2") == (B, 3, 16, 15)
    assert out(x, "op: max_pool2d, kernel_size: 2, ceil_mode: true") == (B, 3, 16, 16)
    assert out(x, "op: max_pool2d, kernel_size: 3, stride: 2, padding: 1") == (B, 3, 16, 16)
    assert out(x, "op: max_pool2d, kernel_size: 3, stride: 1, dilation: 2") == (B, 3, 28, 27)
    assert out(x, "op: avg_pool2d, kernel_size: [2, 3]") == (B, 3, 16, 10)
    assert out("x: [3, 32, 31]", "op: avg_pool2d, kernel_size: 2") == (3, 16, 15)  # unbatched
    assert out("x: [B, 4, 10]", "op: max_pool1d, kernel_size: 3") == (B, 4, 3)
    assert out("x: [B, 4, 10]", "op: avg_pool1d, kernel_size: 3, ceil_mode: true") == (B, 4, 4)
    # ceil_mode never starts a window in the right padding: torch gives 3, not 4
    assert out(
        "x: [1, 1, 5]", "op: max_pool1d, kernel_size: 2, stride: 2, padding: 1, ceil_mode: true"
    ) == (1, 1, 3)
    assert out(
        "x: [1, 1, 6]", "op: max_pool1d, kernel_size: 2, stride: 2, padding: 1, ceil_mode: true"
    ) == (1, 1, 4)


def test_pool_symbolic() -> None:
    shape = out("x: [B, C, H, W]", "op: max_pool2d, kernel_size: 2")
    assert shape[2:] == (add(floordiv(add(H, -2), 2), 1), add(floordiv(add(W, -2), 2), 1))
    shape = out("x: [B, C, H, W]", "op: max_pool2d, kernel_size: 3, stride: 1, padding: 1")
    assert shape[2:] == (H, W)
    # ceil_mode is decidable when no window can start in the padding
    shape = out("x: [B, C, H]", "op: avg_pool1d, kernel_size: 3, stride: 2, ceil_mode: true")
    assert str(shape[2]) == "floor((H - 2)/2) + 1"


@pytest.mark.parametrize(
    ("node", "fn"),
    [
        (
            "op: conv1d, out_channels: 1, kernel_size: 3, stride: 2",
            lambda x: F.conv1d(x, torch.ones(1, 1, 3), stride=2),
        ),
        (
            "op: conv1d, out_channels: 1, kernel_size: 2, stride: 3, padding: 2, dilation: 2",
            lambda x: F.conv1d(x, torch.ones(1, 1, 2), stride=3, padding=2, dilation=2),
        ),
        ("op: max_pool1d, kernel_size: 3, stride: 2", lambda x: F.max_pool1d(x, 3, 2)),
        (
            "op: max_pool1d, kernel_size: 3, stride: 2, ceil_mode: true",
            lambda x: F.max_pool1d(x, 3, 2, ceil_mode=True),
        ),
        (
            "op: avg_pool1d, kernel_size: 4, stride: 3, padding: 1",
            lambda x: F.avg_pool1d(x, 4, 3, 1),
        ),
    ],
)
def test_symbolic_sizes_agree_with_torch(
    node: str, fn: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """The symbolic length formula, evaluated at L = 5..20, is torch's output length."""
    shape = out("x: [1, 1, L]", node)
    for n in range(5, 21):
        assert substitute(shape[2], {"L": n}) == fn(torch.zeros(1, 1, n)).shape[2], n


def test_pool_errors() -> None:
    fails(
        "x: [B, 3, 8, 8]",
        "op: max_pool2d, kernel_size: 2, padding: 2",
        "padding 2 is more than half the kernel size 2",
        "2}",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: avg_pool2d, kernel_size: 3, padding: 2",
        "padding 2 is more than half the kernel size 3",
        "2}",
    )
    fails(
        "x: [B, 3, 4, 8]",
        "op: max_pool2d, kernel_size: 5",
        "kernel_size 5 is larger than the input along dim 2 (size 4)",
        "5}",
    )
    fails(
        "x: [B, 3, H]",
        "op: max_pool1d, kernel_size: 2, padding: 1, ceil_mode: true",
        "ceil_mode needs a concrete size along dim 2, found symbolic 'H'",
        "true",
    )
    fails(
        "x: [B, 3, 8, 8]",
        "op: max_pool2d, kernel_size: 2, stride: [1, 1, 1]",
        "stride has 3 values, this op needs 2",
        "[1",
    )
    fails(
        "x: [B, 8]",
        "op: max_pool2d, kernel_size: 2",
        "max_pool2d (B, C, H, W) expects a rank-3 or 4 input, found [B, 8]",
        "max_pool2d",
    )


def test_adaptive_pool_shapes_and_errors() -> None:
    assert out("x: [B, 3, H, W]", "op: adaptive_avg_pool2d, output_size: 1") == (B, 3, 1, 1)
    assert out("x: [B, 3, H, W]", "op: adaptive_max_pool2d, output_size: [7, null]") == (B, 3, 7, W)
    assert out("x: [B, 3, L]", "op: adaptive_max_pool1d, output_size: 4") == (B, 3, 4)
    assert out("x: [3, L]", "op: adaptive_avg_pool1d, output_size: [4]") == (3, 4)
    fails(
        "x: [B, 3, 8]",
        "op: adaptive_avg_pool1d, output_size: [2, 2]",
        "output_size has 2 values, this op needs 1",
        "[2",
    )
    fails(
        "x: [B, 3, 8]",
        "op: adaptive_avg_pool1d, output_size: [null]",
        "output_size null (keep the input size) is only for 2-D pooling",
        "[null",
    )


# -- norms, dropout --------------------------------------------------------------------------


def test_layer_norm() -> None:
    g = load_graph(spec("x: [B, S, 512]", "- {id: n, op: layer_norm}"))
    node = g.nodes["n"]
    assert g.output_types["y"] == TensorType((B, S, 512))
    assert node.args.normalized_shape == 512  # type: ignore[attr-defined]
    assert node.op.param_shapes(node.args) == {"weight": (512,), "bias": (512,)}
    assert macs(g, "n") == mul(mul(B, S), 512)
    g = load_graph(spec("x: [B, 8]", "- {id: n, op: layer_norm, bias: false}"))
    assert g.nodes["n"].op.param_shapes(g.nodes["n"].args) == {"weight": (8,)}
    fails(
        "x: [B, S]",
        "op: layer_norm",
        "the last dim (normalized_shape) must be a concrete size, found symbolic 'S'",
        "layer_norm",
    )
    fails(
        "x: [B, 8]",
        "op: layer_norm, eps: 0",
        "'eps': input should be greater than 0, found 0",
        "0}",
    )


def test_batch_norm() -> None:
    for x in ("[B, 16]", "[B, 16, L]", "[B, 16, H, W]"):
        g = load_graph(spec(f"x: {x}", "- {id: n, op: batch_norm}"))
        node = g.nodes["n"]
        assert node.args.num_features == 16  # type: ignore[attr-defined]
        assert node.op.param_shapes(node.args) == {"weight": (16,), "bias": (16,)}
        assert node.op.buffer_shapes(node.args) == {
            "running_mean": (16,),
            "running_var": (16,),
            "num_batches_tracked": (),
        }
    g = load_graph(
        spec("x: [B, 4]", "- {id: n, op: batch_norm, affine: false, track_running_stats: false}")
    )
    node = g.nodes["n"]
    assert node.op.param_shapes(node.args) == {} == node.op.buffer_shapes(node.args)
    fails(
        "x: [B, 3, 4, 5, 6]",
        "op: batch_norm",
        "batch_norm (B, C, ...) expects a rank-2 or 3 or 4 input, found [B, 3, 4, 5, 6]",
        "batch_norm",
    )
    fails(
        "x: [B, 4]",
        "op: batch_norm, momentum: 1.5",
        "'momentum': input should be less than or equal to 1, found 1.5",
        "1.5",
    )


def test_dropout() -> None:
    assert out("x: [B, 4]", "op: dropout") == (B, 4)
    assert out("x: [B, 4]", "op: dropout, p: 0") == (B, 4)
    fails("x: [B, 4]", "op: dropout, p: 1.0", "'p': input should be less than 1, found 1.0", "1.0")
    fails(
        "x: [B, 4]",
        "op: dropout, p: -0.1",
        "'p': input should be greater than or equal to 0, found -0.1",
        "-0.1",
    )


# -- lowering: numerics against torch --------------------------------------------------------


def _seeded() -> None:
    torch.manual_seed(0)


def test_lower_shape_ops_numerics_and_code() -> None:
    text = spec(
        "x: [2, 5, 12]\n  w: [2, 12, 3]",
        """
        - {id: r, op: reshape, in: x, shape: [2, 5, 3, 4]}
        - {id: t, op: transpose, dim0: 1, dim1: 2}
        - {id: p, op: permute, dims: [0, 2, 1, 3]}
        - {id: f, op: flatten, start_dim: 2}
        - {id: last, op: index, in: x, at: "[:, -1, :]"}
        - {id: sl, op: index, in: x, at: [":", "1:", "::2"]}
        - {id: e, op: index, in: x, at: "[..., 0]"}
        - {id: nn, op: index, in: x, at: "[None, 1]"}
        - {id: same, op: index, in: x, at: "[:, ...]"}
        - {id: mid, op: index, in: x, at: "[..., 0, :]"}
        - {id: one, op: index, in: x, at: 1}
        - {id: sp, op: split, in: x, sizes: [4, 8]}
        - {id: ch, op: split, in: x, chunks: 3, dim: -1}
        - {id: cat, op: concat, in: [sp.out1, sp.out0, ch.out2], dim: 2}
        - {id: mm, op: matmul, in: [x, w]}
        - {id: sc, op: scale, in: mm, factor: 0.125}
        - {id: fl, op: flatten, in: x}
        """,
        "{f: f, last: last, sl: sl, e: e, nn: nn, same: same, mid: mid, one: one, cat: cat, "
        "sc: sc, fl: fl}",
    )
    g, gm = compile_spec(text)
    _seeded()
    x, w = torch.randn(2, 5, 12), torch.randn(2, 12, 3)
    got = run(gm, x, w)
    want = {
        "f": x.reshape(2, 5, 3, 4).transpose(1, 2).permute(0, 2, 1, 3).flatten(2),
        "last": x[:, -1, :],
        "sl": x[:, 1:, ::2],
        "e": x[..., 0],
        "nn": x[None, 1],
        "same": x,
        "mid": x[..., 0, :],
        "one": x[1],
        "cat": torch.cat([x[..., 4:], x[..., :4], x[..., 8:]], 2),
        "sc": (x @ w) * 0.125,
        "fl": x.flatten(1),
    }
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert_same(got[k], v, msg=k)
        t = g.output_types[k]
        assert t is not None and tuple(v.shape) == t.shape, k
    # the generated forward names each value after its node id and spells indexing as written
    code = gm.code
    assert "torch.flatten(p, 2)" in code
    assert "torch.flatten(x, 1)" in code
    assert "x[:, -1]" in code  # trailing ':' dropped
    assert "x[..., 0]" in code
    assert "x.split([4, 8], -1)" in code
    assert "torch.chunk(x, 3, -1)" in code
    assert "x @ w" in code
    assert "* 0.125" in code


def test_lower_reshape_with_named_dims() -> None:
    text = spec(
        "x: [B, S, 12]",
        """
        - {id: a, op: reshape, shape: [B, S, 3, 4]}
        - {id: b, op: reshape, in: x, shape: [S, B, 3, -1]}
        - {id: c, op: reshape, in: x, shape: [-1, 12]}
        """,
        "{a: a, b: b, c: c}",
    )
    g, gm = compile_spec(text)
    assert g.output_types["b"] == TensorType((S, B, 3, 4))
    x = torch.randn(2, 5, 12)
    got = run(gm, x)
    assert_same(got["a"], x.reshape(2, 5, 3, 4))
    assert_same(got["b"], x.reshape(5, 2, 3, 4))
    assert_same(got["c"], x.reshape(10, 12))
    # one name becomes -1; the others read the input's runtime size
    assert "x.reshape(a_size, -1, 3, 4)" in gm.code
    assert "x.size(1)" in gm.code


def test_lower_matmul_1d_cases() -> None:
    text = spec(
        "v: [4]\n  m: [3, 4, 5]\n  u: [5]",
        """
        - {id: vm, op: matmul, in: [v, m]}
        - {id: mu, op: matmul, in: [m, u]}
        - {id: dot, op: matmul, in: [v, v]}
        """,
        "{vm: vm, mu: mu, dot: dot}",
    )
    g, gm = compile_spec(text)
    v, m, u = torch.randn(4), torch.randn(3, 4, 5), torch.randn(5)
    got = run(gm, v, m, u)
    for k, want in {"vm": v @ m, "mu": m @ u, "dot": v @ v}.items():
        assert_same(got[k], want)
        t = g.output_types[k]
        assert t is not None and tuple(want.shape) == t.shape


def test_lower_conv_numerics_and_state() -> None:
    text = spec(
        "x: [2, 4, 11, 9]\n  s: [2, 4, 17]",
        """
        - {id: c1, op: conv2d, in: x, out_channels: 6, kernel_size: [3, 2],
           stride: 2, padding: [1, 0]}
        - {id: c2, op: conv2d, out_channels: 6, kernel_size: 3, padding: same,
           groups: 3, bias: false}
        - {id: c3, op: conv2d, out_channels: 2, kernel_size: 2, dilation: 2, padding: valid}
        - {id: d1, op: conv1d, in: s, out_channels: 8, kernel_size: 5, stride: 3,
           padding: 2, groups: 4}
        """,
        "{y: c3, z: d1}",
    )
    g, gm = compile_spec(text)
    assert isinstance(gm.c1, nn.Conv2d) and isinstance(gm.d1, nn.Conv1d)
    assert "c1.weight" in gm.state_dict()
    x, s = torch.randn(2, 4, 11, 9), torch.randn(2, 4, 17)
    got = run(gm, x, s)
    y = F.conv2d(x, gm.c1.weight, gm.c1.bias, stride=2, padding=(1, 0))
    y = F.conv2d(y, gm.c2.weight, None, padding=1, groups=3)
    y = F.conv2d(y, gm.c3.weight, gm.c3.bias, dilation=2)
    z = F.conv1d(s, gm.d1.weight, gm.d1.bias, stride=3, padding=2, groups=4)
    assert_same(got["y"], y)
    assert_same(got["z"], z)
    for k, v in (("y", y), ("z", z)):
        t = g.output_types[k]
        assert t is not None and tuple(v.shape) == t.shape


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_lower_conv_same_padding_even_kernel() -> None:
    """An even kernel pads one more on the right, as torch does (torch warns about a copy)."""
    g, gm = compile_spec(
        spec(
            "x: [2, 3, 7, 8]",
            "- {id: n, op: conv2d, out_channels: 4, kernel_size: [4, 2], padding: same}",
        )
    )
    x = torch.randn(2, 3, 7, 8)
    want = F.conv2d(F.pad(x, (0, 1, 1, 2)), gm.n.weight, gm.n.bias)
    assert_same(run(gm, x)["y"], want)
    assert g.output_types["y"] == TensorType((2, 4, 7, 8))


@pytest.mark.parametrize(
    ("node", "fn"),
    [
        ("op: max_pool2d, kernel_size: 2", lambda x: F.max_pool2d(x, 2)),
        (
            "op: max_pool2d, kernel_size: 3, stride: 2, padding: 1, ceil_mode: true",
            lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
        ),
        (
            "op: max_pool2d, kernel_size: [2, 3], stride: 1, dilation: 2",
            lambda x: F.max_pool2d(x, (2, 3), 1, dilation=2),
        ),
        ("op: avg_pool2d, kernel_size: 3", lambda x: F.avg_pool2d(x, 3)),
        (
            "op: avg_pool2d, kernel_size: 3, stride: 2, padding: 1, count_include_pad: false",
            lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        ),
        ("op: adaptive_avg_pool2d, output_size: 1", lambda x: F.adaptive_avg_pool2d(x, 1)),
        (
            "op: adaptive_max_pool2d, output_size: [3, null]",
            lambda x: F.adaptive_max_pool2d(x, (3, None)),
        ),
    ],
)
def test_lower_pool2d(node: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    g, gm = compile_spec(spec("x: [2, 3, 13, 10]", f"- {{id: n, {node}}}"))
    x = torch.randn(2, 3, 13, 10)
    want = fn(x)
    assert_same(run(gm, x)["y"], want)
    t = g.output_types["y"]
    assert t is not None and t.shape == tuple(want.shape)


@pytest.mark.parametrize(
    ("node", "fn"),
    [
        ("op: max_pool1d, kernel_size: 2", lambda x: F.max_pool1d(x, 2)),
        (
            "op: max_pool1d, kernel_size: 2, stride: 2, padding: 1, ceil_mode: true",
            lambda x: F.max_pool1d(x, 2, 2, 1, ceil_mode=True),
        ),
        (
            "op: avg_pool1d, kernel_size: 4, stride: 3, ceil_mode: true",
            lambda x: F.avg_pool1d(x, 4, 3, ceil_mode=True),
        ),
        ("op: adaptive_avg_pool1d, output_size: 4", lambda x: F.adaptive_avg_pool1d(x, 4)),
        ("op: adaptive_max_pool1d, output_size: [3]", lambda x: F.adaptive_max_pool1d(x, 3)),
    ],
)
@pytest.mark.parametrize("size", [9, 10])
def test_lower_pool1d(node: str, fn: Callable[[torch.Tensor], torch.Tensor], size: int) -> None:
    g, gm = compile_spec(spec(f"x: [2, 3, {size}]", f"- {{id: n, {node}}}"))
    x = torch.randn(2, 3, size)
    want = fn(x)
    assert_same(run(gm, x)["y"], want)
    t = g.output_types["y"]
    assert t is not None and t.shape == tuple(want.shape)


def test_lower_norms_and_dropout() -> None:
    text = spec(
        "x: [4, 6, 5, 5]\n  s: [4, 7, 10]",
        """
        - {id: bn2, op: batch_norm, in: x, eps: 0.001, momentum: 0.2}
        - {id: bn1, op: batch_norm, in: s, affine: false}
        - {id: ln, op: layer_norm, in: s, eps: 0.0001}
        - {id: ln0, op: layer_norm, in: s, elementwise_affine: false}
        - {id: drop, op: dropout, in: ln, p: 0.3}
        - {id: bnf, op: batch_norm, in: s, track_running_stats: false, momentum: null}
        """,
        "{bn2: bn2, bn1: bn1, drop: drop, ln0: ln0, bnf: bnf}",
    )
    _, gm = compile_spec(text)
    assert isinstance(gm.bn2, nn.BatchNorm2d) and isinstance(gm.bn1, nn.BatchNorm1d)
    assert isinstance(gm.drop, nn.Dropout) and gm.drop.p == 0.3
    assert gm.bn2.eps == 0.001 and gm.bn2.momentum == 0.2
    assert gm.bnf.momentum is None
    x, s = torch.randn(4, 6, 5, 5), torch.randn(4, 7, 10)
    with torch.no_grad():
        gm.ln.weight.uniform_()
        gm.ln.bias.uniform_()
    gm.eval()
    got = run(gm, x, s)
    # fresh running stats (mean 0, var 1) against the formula: the kernel's subtract, rsqrt,
    # scale and shift, and the formula's division: 5 roundings
    formula = Tolerance(torch.float32, 5)
    numerics.assert_close(got["bn2"], x / (1 + 0.001) ** 0.5, formula)
    numerics.assert_close(got["bn1"], s / (1 + 1e-5) ** 0.5, formula)
    ln = F.layer_norm(s, (10,), gm.ln.weight, gm.ln.bias, eps=1e-4)
    assert_same(got["drop"], ln)  # dropout is the identity in eval mode
    assert_same(got["ln0"], F.layer_norm(s, (10,)))
    assert_same(got["bnf"], F.batch_norm(s, None, None, training=True))
    gm.train()
    got = run(gm, x, s)
    assert_same(
        got["bn2"], F.batch_norm(x, None, None, gm.bn2.weight, gm.bn2.bias, True, eps=0.001)
    )
    assert gm.bn2.num_batches_tracked.item() == 1
    dropped = got["drop"]
    assert (dropped == 0).any() and not (dropped == 0).all()
    kept = dropped != 0
    # dropout multiplies by a rounded 1 / 0.7; the test divides: 2 roundings
    numerics.assert_close(dropped[kept], ln[kept] / 0.7, Tolerance(torch.float32, 2))


def test_lowerings_import_no_torch_at_declaration() -> None:
    """Every op module imports torch only inside lowering functions (``check`` needs no torch)."""
    import ast
    from pathlib import Path

    import archcomp.ops as ops_pkg

    files = sorted(Path(ops_pkg.__file__).parent.glob("*.py"))
    assert len(files) > 10
    for path in files:
        for stmt in ast.parse(path.read_text()).body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                mods = (
                    [a.name for a in stmt.names]
                    if isinstance(stmt, ast.Import)
                    else [stmt.module or ""]
                )
                assert not any(m == "torch" or m.startswith("torch.") for m in mods), (path, mods)


def test_macs_are_symbolic_per_forward() -> None:
    g = load_graph(
        spec(
            "x: [B, 3, H, W]",
            """
            - {id: n, op: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
            - {id: bn, op: batch_norm}
            """,
            "{y: bn}",
        )
    )
    assert macs(g, "n") == mul(mul(mul(B, H), W), 4 * 3 * 9)
    assert macs(g, "bn") == mul(mul(mul(B, H), W), 4)
    assert get_op("max_pool2d").macs is None  # type: ignore[union-attr]


def test_getitem_target_is_operator() -> None:
    _, gm = compile_spec(spec("x: [2, 3]", "- {id: n, op: index, at: '[:, 1:]'}"))
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets == [operator.getitem]
    (getitem,) = (n for n in gm.graph.nodes if n.op == "call_function")
    assert getitem.args[1] == (slice(None, None, None), slice(1, None, None))
    assert "x[:, 1:]" in gm.code
