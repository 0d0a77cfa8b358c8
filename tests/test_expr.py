"""The restricted expression evaluator."""

from __future__ import annotations

import pytest

from archcomp.frontend.expr import ExprError, evaluate, substitute

P = {"d_model": 512, "h": 8, "dropout": 0.1, "act": "gelu", "big": True, "kinds": ["a", "b", "c"]}


@pytest.mark.parametrize(
    ("src", "value"),
    [
        ("4 * d_model", 2048),
        ("d_model // h", 64),
        ("d_model / h", 64.0),
        ("d_model % 7", 1),
        ("2 ** 10", 1024),
        ("-h + 1", -7),
        ("min(h, 4, 6)", 4),
        ("max(d_model, 1024)", 1024),
        ("abs(-3)", 3),
        ("int(d_model * 0.25)", 128),  # GPT-NeoX: rotary_dim = int(head_dim * rotary_pct)
        ("int(4.0) * h", 32),  # Swin: mlp_ratio 4.0 sizes a layer
        ("int(-2.7)", -2),  # toward zero, as Python
        ("int(7)", 7),
        ("float(h)", 8.0),
        ("round(2.5)", 2),  # half to even, as Python
        ("round(3.5)", 4),
        ("round(-0.5)", 0),
        ("round(dropout * 100)", 10),
        ("min(h, 2.5)", 2.5),
        ("d_model if big else 256", 512),
        ("256 if not big else 1", 1),
        ("h > 4 and h < 16", True),
        ("h == 8 or False", True),
        ("1 < h <= 8", True),
        ("act == 'gelu'", True),
        ("[h, h]", [8, 8]),
        ("dropout * 2", 0.2),
        ("'a' + 'b'", "ab"),
        ("kinds[1]", "b"),  # Gemma: a layer's kind, kinds[index]
        ("kinds[-1]", "c"),
        ("kinds[h - 8] == 'a'", True),
        ("['s', 'f'] * 2 + ['s']", ["s", "f", "s", "f", "s"]),  # Gemma 2's alternation
        ("2 * [h]", [8, 8]),
        ("[h] * 0", []),
        ("null if big else h", None),  # an op argument left out
        ("null == null", True),
    ],
)
def test_evaluates(src: str, value: object) -> None:
    assert evaluate(src, P) == value


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("d_modle * 2", "unknown name 'd_modle'"),
        ("h.__class__", "is not allowed"),
        ("P['h']", "unknown name 'P'"),
        ("kinds[0:1]", "slices are not allowed"),
        ("kinds[3]", "index 3 is out of range for a list of 3 elements"),
        ("kinds['a']", "a list index must be an int, found string"),
        ("kinds[big]", "a list index must be an int, found bool"),
        ("act[0]", "only a list has elements by index, found string"),
        ("[1] * 2.0", "a list repeats an int number of times"),
        ("[1] * 10001", "a list of more than 10,000 elements"),
        ("[[1] * 5000] * 5000", "a list of more than 10,000 elements"),
        ("kinds + 'a'", "needs numbers"),
        ("open('x')", "call 'open(...)' is not allowed"),
        ("__import__('os')", "is not allowed"),
        ("(lambda: 1)()", "is not allowed"),
        ("[x for x in [1]]", "is not allowed"),
        ("10 ** 100", "integer overflow"),
        ("9 ** 9 ** 9", "integer overflow"),
        ("2 ** 62 * 4", "integer overflow"),
        ("h // 0", "division by zero"),
        ("h + 'a'", "needs numbers"),
        ("True + 1", "needs numbers"),
        ("1 if h else 2", "expected a bool condition"),
        ("h +", "invalid expression"),
        ("x" * 600, "longer than"),
        ("(" * 240 + "1" + ")" * 240, "invalid expression|too deeply nested"),
        ("1e308 * 10", "not a finite number"),
        ("int(1e300)", "integer overflow"),
        ("round(1e19)", "integer overflow"),
        ("int('3')", "int() needs numbers, found string '3'"),
        ("float(big)", "float() needs numbers, found bool True"),
        ("int(1, 2)", "int() takes one argument, found 2"),
        ("round(2.5, 1)", "round() takes one argument, found 2"),
        ("float()", "float() takes one argument, found 0"),
        ("min(h)", "min() takes two or more arguments, found 1"),
        ("max([1, 2])", "max() needs numbers, found list"),
        ("int(x=1)", "int() takes no keyword arguments"),
        ("len([1])", "call 'len(...)' is not allowed"),
        ("null < 1", "cannot compare null with int"),
        ("null + 1", "needs numbers, found null"),
        ("kinds.a", "'kinds.a' is not allowed"),  # a param has no fields
        ("rope_scaling.factor", "'rope_scaling.factor' is not allowed"),
    ],
)
def test_refuses(src: str, message: str) -> None:
    pattern = message if "|" in message else message.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ExprError, match=pattern):
        evaluate(src, P)


@pytest.mark.parametrize("src", ["int(2.5)", "round(2.5)", "round(7.0)", "int(-0.0)"])
def test_int_results_are_ints(src: str) -> None:
    """int() and round() give ints, never floats that equal them (a float cannot size a
    layer): a planted ``float`` result for either fails here."""
    assert type(evaluate(src, P)) is int


def test_round_is_bankers_rounding() -> None:
    """Python's round: halves go to the even neighbour (a planted 'half up' fails on 2.5)."""
    assert [evaluate(f"round({x})", P) for x in (0.5, 1.5, 2.5, -1.5, 2.6)] == [0, 2, 2, -2, 3]


def test_unknown_name_suggests() -> None:
    with pytest.raises(ExprError) as exc:
        evaluate("d_modle", P)
    assert exc.value.hint == "did you mean 'd_model'?"


def test_substitute_whole_and_interpolated() -> None:
    assert substitute("${4 * d_model}", P) == 2048
    assert substitute("N = ${h}x", P) == "N = 8x"
    assert substitute("${big}", P) is True
    assert substitute("plain", P) == "plain"
    assert substitute(3, P) == 3


def test_dotted_names_are_a_configs_nested_fields() -> None:
    """A mapping's names are config.json's fields flattened (``rope_scaling.factor``): a dotted
    name reads one of those, and is no attribute access (a planted getattr fails the last)."""
    config = {"rope_scaling.factor": 8.0, "rope_scaling.rope_type": "llama3", "h": 8}
    assert evaluate("rope_scaling.factor * 2", config) == 16.0
    assert evaluate("rope_scaling.rope_type == 'llama3'", config) is True
    with pytest.raises(ExprError, match="is not allowed"):
        evaluate("rope_scaling.rope_type.upper", config)
    with pytest.raises(ExprError, match="is not allowed"):
        evaluate("h.real", config)


def test_null_interpolates_as_null() -> None:
    assert substitute("x${null}", P) == "xnull"
    assert substitute("${null}", P) is None
