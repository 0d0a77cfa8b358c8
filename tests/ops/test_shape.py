"""Shape ops (archcomp/ops/shape.py): flatten, reshape, transpose, permute, index, concat,
split, expand, matmul, scale, identity. Shapes on concrete and symbolic inputs, located
errors, and the lowered code and values against torch.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import operator

import pytest
import torch
from lowering import (
    check_declared,
    compile_for_test,
    compile_spec,
    error_of,
    errors_of,
    fails,
    macs,
    out,
    run,
    spec,
    where,
)
from numerics import assert_same

from archcomp import SpecError, load_graph
from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Sym, add, floordiv, mul
from archcomp.ops import get_op
from archcomp.ops.shape import parse_index

B, S, T, H, W = (Sym.symbol(n) for n in "BSTHW")


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
    "identity": ("shape", "Identity"),
    "expand": ("shape", "Expand"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def _seeded() -> None:
    torch.manual_seed(0)


def test_split_declares_sixteen_results() -> None:
    op = get_op("split")
    assert op is not None
    assert op.results == tuple(f"out{i}" for i in range(16))


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
    # a length the dim's size decides is min(S, k): S is at least 1 and no more is known
    assert out(x, "op: index, at: '[:, -3:]'") == (B, Sym.symbol("min(S, 3)"), 512)
    assert out(x, "op: index, at: '[:, :16]'") == (B, Sym.symbol("min(S, 16)"), 512)
    assert out(x, "op: index, at: '[:, :4]'") == (B, Sym.symbol("min(S, 4)"), 512)
    assert out(x, "op: index, at: '[:, 1:4]'") == (B, add(Sym.symbol("min(S, 4)"), -1), 512)
    assert out(x, "op: index, at: '[:, :1]'") == (B, 1, 512)  # every size is at least 1
    assert out(x, "op: index, at: '[:, -1:]'") == (B, 1, 512)
    assert out(x, "op: index, at: '[:, ::2]'") == (B, floordiv(add(S, 1), 2), 512)
    assert out(x, "op: index, at: '[:, 1:-1]'") == (B, add(S, -2), 512)
    assert out(x, "op: index, at: '[:, -5:-2]'") == (B, add(Sym.symbol("min(S, 5)"), -2), 512)


def _index_of(dims: str, at: str) -> tuple[object, ...]:
    """The shape of ``x[at]`` for x of [B, T] under ``dims``."""
    text = f"""
archcomp: 1
name: m
dims: {dims}
inputs: {{x: [B, T]}}
nodes: [{{id: n, op: index, at: "{at}"}}]
outputs: n
"""
    return next(iter(load_graph(text).nodes["n"].outputs.values())).shape


@pytest.mark.parametrize(
    ("at", "least", "shape"),
    [
        ("[:, :2]", 2, (B, 2)),  # T >= 2: x[:, :2] has 2 rows
        ("[:, :2]", 1, (B, Sym.symbol("min(T, 2)"))),  # T may be 1
        ("[:, -3:]", 3, (B, 3)),
        ("[:, 1:5]", 8, (B, 4)),
        ("[:, 1:5]", 4, (B, add(Sym.symbol("min(T, 5)"), -1))),
        ("[:, -4:-1]", 4, (B, 3)),
        ("[:, :6:2]", 6, (B, 3)),
    ],
)
def test_index_uses_the_declared_least_size(at: str, least: int, shape: tuple[object, ...]) -> None:
    """``dims: {T: {min: k}}`` decides min(T, n) for n <= k; a planted off-by-one in the bound
    (``low > k``) fails the cases where n == k."""
    assert _index_of(f"{{B: 1, T: {{size: 16, min: {least}}}}}", at) == shape


def test_concat_of_a_split_sequence_is_the_sequence() -> None:
    """x[:, :2] and x[:, 2:] of T >= 2 joined again are T long (not T + T[:2] - 2)."""
    text = """
archcomp: 1
name: m
dims: {B: 1, T: {min: 2}}
inputs: {x: [B, T, 4]}
nodes:
  - {id: head, op: index, at: "[:, :2]"}
  - {id: tail, op: index, in: x, at: "[:, 2:]"}
  - {id: both, op: concat, in: [head, tail], dim: 1}
outputs: both
"""
    assert next(iter(load_graph(text).nodes["both"].outputs.values())).shape == (B, T, 4)


def test_example_size_below_its_least_value() -> None:
    text = """
archcomp: 1
name: m
dims: {T: {size: 1, min: 2}}
inputs: {x: [B, T]}
nodes: [{id: n, op: index, at: "[:, :2]"}]
outputs: n
"""
    with pytest.raises(SpecError, match="dim 'T' has example size 1, below its least value 2"):
        load_graph(text)


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


def test_getitem_target_is_operator() -> None:
    _, gm = compile_spec(spec("x: [2, 3]", "- {id: n, op: index, at: '[:, 1:]'}"))
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets == [operator.getitem]
    (getitem,) = (n for n in gm.graph.nodes if n.op == "call_function")
    assert getitem.args[1] == (slice(None, None, None), slice(1, None, None))
    assert "x[:, 1:]" in gm.code


def test_identity_adds_no_code() -> None:
    g = load_graph(
        spec(
            "x: {shape: [B, 4], dtype: int64}",
            "- {id: same, op: identity}\n- {id: n, op: add, in: [same, x]}",
        )
    )
    assert g.output_types["y"] is not None and g.output_types["y"].dtype == "int64"
    gm = compile_for_test(g)
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "call_function", "output"]
    assert "n = x + x" in gm.code
    x = torch.arange(8).reshape(2, 4)
    assert torch.equal(run(gm, x)["y"], 2 * x)


def test_expand_shapes_and_errors() -> None:
    assert out("x: [B, 1, 8]", "op: expand, shape: [-1, 5, -1]") == (B, 5, 8)
    assert out("x: [1, 8]", "op: expand, shape: [3, 2, -1]") == (3, 2, 8)
    fails(
        "x: [B, 2, 8]",
        "op: expand, shape: [-1, 5, -1]",
        "cannot expand dim 1 of size 2 to 5: only size-1 dims expand",
        "[-1, 5",
    )
    fails(
        "x: [1, 8]",
        "op: expand, shape: [B, -1]",
        "'B' is not a dim without a like",
        "[B",
    )
    fails(
        "x: [1, 8]",
        "op: expand, shape: [-1, -1, -1]",
        "-1 at entry 0 would keep a dim the input does not have",
        "[-1",
    )
    fails(
        "x: [1, 1, 8]",
        "op: expand, shape: [-1, -1]",
        "shape has 2 entries for a rank-3 input [1, 1, 8]",
        "[-1",
    )
    text = spec(
        "x: [B, 4, 8]\n  c: [1, 1, 8]",
        "- {id: n, op: expand, in: {x: c, like: x}, shape: [S, -1, -1]}",
    )
    assert errors_of(text) == ["'S' is not a dim of the like input [B, 4, 8]"]
