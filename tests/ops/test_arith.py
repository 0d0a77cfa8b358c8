"""Element-wise arithmetic (archcomp/ops/arith.py): add/sub/mul/div with scalars, neg, sqrt,
rsqrt, exp, pow, clamp, log, floor, abs, minimum, maximum, cumsum, cast. Values, gradients and
result dtypes against torch; shapes and errors.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from lowering import (
    check_against,
    check_declared,
    check_torch,
    compile_for_test,
    fails,
    out,
    run,
    spec,
)

from archcomp import SpecError, load_graph
from archcomp.ir.dims import Sym

B, S = (Sym.symbol(n) for n in "BS")


OPS = {
    "sub": ("arith", "−"),
    "div": ("arith", "÷"),
    "neg": ("arith", "−x"),
    "sqrt": ("arith", "√"),
    "rsqrt": ("arith", "1/√"),
    "exp": ("arith", "exp"),
    "pow": ("arith", "Pow"),
    "clamp": ("arith", "Clamp"),
    "log": ("arith", "log"),
    "floor": ("arith", "⌊x⌋"),
    "abs": ("arith", "|x|"),
    "minimum": ("arith", "Min"),
    "maximum": ("arith", "Max"),
    "cumsum": ("arith", "Cumsum"),
    "cast": ("arith", "Cast"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


DTYPES = ("float32", "float16", "int64", "bool")


@pytest.mark.parametrize(
    ("node", "ref", "positive"),
    [
        ("op: sub, in: [x, y]", lambda x, y: x - y, False),
        ("op: div, in: [x, y]", lambda x, y: x / y, True),
        ("op: sub, in: [x, y, x]", lambda x, y: x - y - x, False),
        ("op: div, in: [x, y, y]", lambda x, y: x / y / y, True),
        ("op: add, in: [x, y], scalar: 0.5", lambda x, y: x + y + 0.5, False),
        ("op: mul, in: [x, y], scalar: 3", lambda x, y: x * y * 3, False),
        ("op: sub, in: [x, y], scalar: 2, scalar_first: true", lambda x, y: 2 - x - y, False),
        ("op: div, in: [x, y], scalar: 1, scalar_first: true", lambda x, y: 1 / x / y, True),
        ("op: div, in: [x, y], scalar: 4", lambda x, y: x / y / 4, True),
    ],
)
def test_binary_arithmetic_matches_torch(
    node: str, ref: Callable[..., torch.Tensor], positive: bool
) -> None:
    check_against(node, ref, {"x": (2, 3, 4), "y": (3, 1)}, positive)  # y broadcasts


@pytest.mark.parametrize(
    ("node", "ref", "positive"),
    [
        ("op: add, scalar: 1.0e-6", lambda x: x + 1e-6, False),
        ("op: sub, scalar: 1", lambda x: x - 1, False),
        ("op: sub, scalar: 1, scalar_first: true", lambda x: 1 - x, False),
        ("op: mul, scalar: -0.5", lambda x: x * -0.5, False),
        ("op: div, scalar: 8", lambda x: x / 8, False),
        ("op: neg", lambda x: -x, False),
        ("op: sqrt", lambda x: x**0.5, True),
        ("op: rsqrt", lambda x: 1 / x**0.5, True),
        ("op: exp", lambda x: math.e**x, False),
        ("op: pow, exponent: 2", lambda x: x * x, False),
        ("op: pow, exponent: -1.5", lambda x: 1 / (x * x**0.5), True),
        ("op: clamp, min: -1, max: 1.5", lambda x: x.clamp(-1, 1.5), False),
        ("op: clamp, min: 0", lambda x: torch.where(x < 0, 0.0, x), False),
        ("op: clamp, max: 6", lambda x: torch.where(x > 6, 6.0, x), False),
    ],
)
def test_unary_arithmetic_matches_torch(
    node: str, ref: Callable[..., torch.Tensor], positive: bool
) -> None:
    check_against(node, ref, {"x": (2, 3, 4)}, positive)


def test_arithmetic_code_reads_as_written() -> None:
    g = load_graph(
        spec(
            "x: [B, 4]",
            """
            - {id: a, op: sub, in: x, scalar: 1, scalar_first: true}
            - {id: b, op: div, in: [a, x], scalar: 2}
            - {id: c, op: pow, exponent: 2}
            - {id: d, op: neg}
            - {id: n, op: clamp, min: 0}
            """,
        )
    )
    code = compile_for_test(g).code
    for line in ("a = 1 - x", "b_truediv = a / x", "b = b_truediv / 2", "c = b ** 2", "d = -c"):
        assert line in code, code
    assert "torch.clamp(d, min = 0)" in code


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("scalar", [None, 2, 0.5])
def test_result_dtypes_are_torchs(dtype: str, op: str, scalar: float | None) -> None:
    """The checked dtype is the one torch's promotion gives, and the compiled op gives it."""
    fn = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}[op]
    x = torch.tensor([[1, 0, 1]], dtype=getattr(torch, dtype))
    y = torch.tensor([[1, 1, 1]], dtype=getattr(torch, dtype))
    ins = "x" if scalar is not None else "[x, y]"
    node = f"op: {op}, in: {ins}" + (f", scalar: {scalar}" if scalar is not None else "")
    typed = f"{{shape: [1, 3], dtype: {dtype}}}"
    text = spec(
        f"x: {typed}\n  y: {typed}",
        f"- {{id: n, {node}}}\n- {{id: u, op: concat, in: [y]}}",  # y is used either way
        "{y: n, u: u}",
    )
    try:
        want = fn(x, scalar) if scalar is not None else fn(x, y)
    except RuntimeError:  # torch refuses '-' on bools
        with pytest.raises(SpecError, match="sub does not take bool tensors"):
            load_graph(text)
        return
    g = load_graph(text)
    t = g.output_types["y"]
    assert t is not None and t.dtype == str(want.dtype).removeprefix("torch.")
    got = run(compile_for_test(g), x, y)["y"]
    assert got.dtype == want.dtype and torch.equal(got, want)


def test_arithmetic_shapes_and_errors() -> None:
    assert out("x: [B, S, 4]\n  y: [S, 1]", "op: sub, in: [x, y]") == (B, S, 4)
    assert out("x: [B, 4]", "op: div, scalar: 2") == (B, 4)
    assert out("x: [B, 4]", "op: identity") == (B, 4)
    fails(
        "x: [B, 4]",
        "op: add, in: x",
        "needs at least two inputs, found 1",
        "x}",
    )
    fails(
        "x: [B, 4]\n  y: [B, 3]",
        "op: div, in: [x, y]",
        "shapes [B, 4] and [B, 3] do not match at dim -1 (4 vs 3)",
        "[x, y]",
    )
    fails(
        "x: [B, 4]",
        "op: sub, scalar_first: true",
        "scalar_first needs a scalar",
        "true",
    )
    fails("x: [B, 4]", "op: clamp", "clamp needs min, max or both", "clamp")
    fails("x: [B, 4]", "op: clamp, min: 2, max: 1", "min (2) is above max (1)", "1}")
    fails(
        "x: {shape: [B, 4], dtype: int64}",
        "op: sqrt",
        "sqrt needs a floating-point input, found int64",
        "sqrt",
    )
    fails(
        "x: {shape: [B, 4], dtype: bool}",
        "op: neg",
        "neg does not take a bool tensor (torch refuses '-' on it)",
        "neg",
    )
    fails(
        "x: [B, 4]",
        "op: mul, scalar: true",
        "'scalar': expected an int or a float, found bool True",
        "true",
    )
    fails("x: [B, 4]", "op: pow", "missing required argument 'exponent'", "{id")


# -- log, floor, abs, minimum, maximum, cumsum, cast --------------------------------------------


def _values(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(sum(shape))
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 3).to(dtype)
    return torch.randint(-4, 5, shape, generator=gen).to(dtype)


@pytest.mark.parametrize(
    ("node", "ref", "dtype"),
    [
        ("op: log", torch.log, torch.float32),
        ("op: floor", torch.floor, torch.float32),
        ("op: abs", torch.abs, torch.float32),
        ("op: abs", torch.abs, torch.int64),
        ("op: cumsum, dim: 1", lambda x: torch.cumsum(x, 1), torch.float32),
        ("op: cumsum, dim: -1", lambda x: torch.cumsum(x, -1), torch.int32),
        ("op: cumsum, dim: 0", lambda x: torch.cumsum(x, 0), torch.bool),
        ("op: minimum, scalar: 1", lambda x: torch.minimum(x, torch.tensor(1)), torch.int64),
        ("op: maximum, scalar: -0.5", lambda x: torch.clamp(x, min=-0.5), torch.float32),
        ("op: cast, dtype: int64", lambda x: x.to(torch.int64), torch.float32),
        ("op: cast, dtype: float16", lambda x: x.half(), torch.float32),
        ("op: cast, dtype: float32", lambda x: x.float(), torch.bool),
        ("op: cast, dtype: bool", lambda x: x.bool(), torch.int64),
    ],
)
def test_unary_ops_are_torchs(
    node: str, ref: Callable[..., torch.Tensor], dtype: torch.dtype
) -> None:
    """Values, dtypes and gradients (log, abs, cumsum, maximum, the float casts) as torch's."""
    x = _values(3, 5, dtype=dtype)
    if node == "op: log":
        x = x.abs() + 0.1
    check_torch(node, ref, {"x": x.bool() if dtype == torch.bool else x})


@pytest.mark.parametrize("op", ["minimum", "maximum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_minimum_and_maximum_are_torchs(op: str, dtype: torch.dtype) -> None:
    fn = getattr(torch, op)
    check_torch(
        f"op: {op}, in: [x, y]",
        fn,
        {"x": _values(2, 3, 4, dtype=dtype), "y": _values(4, dtype=dtype)},
    )


def test_cast_like_follows_the_other_inputs_dtype() -> None:
    g = check_torch(
        "op: cast, in: {x: m, like: h}",
        lambda m, h: m.to(h.dtype),
        {"m": _values(2, 3, dtype=torch.int64) > 0, "h": _values(2, 3, dtype=torch.bfloat16)},
    )
    assert compile_for_test(g).code.count("m.to(") == 1


def test_planted_bugs_in_the_new_arithmetic_fail() -> None:
    x = _values(3, 5).abs() + 0.1
    with pytest.raises(AssertionError):
        check_torch("op: log", torch.log2, {"x": x})
    with pytest.raises(AssertionError):
        check_torch("op: cumsum, dim: 1", lambda x: torch.cumsum(x, 0), {"x": x})
    with pytest.raises(AssertionError):  # a cast that truncates differently: round, not trunc
        check_torch("op: cast, dtype: int64", lambda x: x.round().long(), {"x": x * 3})


def test_new_arithmetic_shapes_dtypes_and_errors() -> None:
    assert out("x: [B, S, 4]\n  y: [S, 1]", "op: maximum, in: [x, y]") == (B, S, 4)
    g = load_graph(spec("x: {shape: [B, S], dtype: bool}", "- {id: n, op: cumsum, dim: 1}"))
    assert str(g.output_types["y"]) == "[B, S] int64"
    fails(
        "x: {shape: [B, 4], dtype: int64}",
        "op: log",
        "log needs a floating-point input, found int64",
        "log",
    )
    fails(
        "x: {shape: [B, 4], dtype: bool}",
        "op: floor",
        "floor needs a floating-point input, found bool",
        "floor",
    )
    fails(
        "x: {shape: [B, 4], dtype: bool}",
        "op: abs",
        "abs does not take a bool tensor (torch refuses it)",
        "abs",
    )
    fails(
        "x: {shape: [B, 4], dtype: int64}",
        "op: minimum, scalar: 2.5",
        "minimum: scalar 2.5 is not a whole number, and the values are int64",
        "2.5",
    )
    fails(
        "x: {shape: [B, 4], dtype: int64}\n  y: [B, 4]",
        "op: maximum, in: [x, y]",
        "inputs have different dtypes: float32, int64",
        "[x, y]",
    )
    fails("x: [B, 4]", "op: maximum", "maximum needs a second input or a scalar", "maximum")
    fails(
        "x: {shape: [B, 4], dtype: bool}",
        "op: minimum, scalar: 0",
        "minimum with a scalar does not take a bool tensor",
        "minimum",
    )
    fails("x: [B, 4]", "op: cumsum, dim: 2", "dim=2 is out of range for a rank-2 tensor", "2}")
    fails("x: [B, 4]", "op: cast", "cast needs exactly one of dtype and an input like", "cast")
    fails(
        "x: [B, 4]",
        "op: cast, dtype: int8",
        "'dtype': expected 'float32', 'float16', 'bfloat16', 'float64', 'int64', 'int32' or "
        "'bool', found string 'int8'",
        "int8",
    )
