"""Value-size limits: integers of any spelling (decimal, hex, octal, in the file or in -p), and
the strings and lists expressions build (doubling over params stops at the limit)."""

from __future__ import annotations

import pytest

from archcomp.base.errors import SpecError, UsageError
from archcomp.frontend.build import parse_override
from archcomp.frontend.expr import MAX_ITEMS, MAX_STRING, ExprError, evaluate, substitute
from archcomp.frontend.source import MAX_INT_DIGITS, decimal_digits, load_yaml
from archcomp.passes.pipeline import load_graph

HEAD = "archcomp: 1\nname: m\ninputs: {x: [B, 4]}\n"


def _codes(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_graph(text)
    return [d.code for d in info.value.diagnostics]


@pytest.mark.parametrize(
    "literal", ["0x" + "f" * 5000, "0o" + "7" * 200, "9" * 101, "0x" + "f" * 84]
)
def test_an_integer_past_the_limit_is_refused_in_any_spelling(literal: str) -> None:
    with pytest.raises(SpecError) as info:
        load_yaml(f"n: {literal}\n", "s.yaml")
    (d,) = info.value.diagnostics
    assert d.code == "yaml-number-too-large" and d.loc is not None and d.loc.col == 4
    assert f"archcomp reads at most {MAX_INT_DIGITS}" in d.message


def test_the_largest_integer_of_each_spelling_is_read() -> None:
    top = 10**MAX_INT_DIGITS - 1
    assert load_yaml(f"n: {top}\n", "s")[0] == {"n": top}
    assert load_yaml(f"n: {hex(top)}\n", "s")[0] == {"n": top}
    assert load_yaml(f"n: 0o{top:o}\n", "s")[0] == {"n": top}


def test_decimal_digits_never_prints_a_huge_int() -> None:
    assert decimal_digits(10**99) == "100"
    assert decimal_digits(-(10**5000)).startswith("about 5,0")


def test_hex_in_a_node_argument_and_in_dims_is_a_located_error() -> None:
    nodes = "nodes:\n  - {id: fc, op: linear, out_features: 0x" + "f" * 5000 + "}\noutputs: fc\n"
    assert _codes(HEAD + nodes) == ["yaml-number-too-large"]
    dims = "archcomp: 1\nname: m\ndims: {B: 0x" + "f" * 5000 + "}\n"
    assert _codes(dims + "inputs: {x: [B, 4]}\nnodes: [{id: r, op: relu}]\noutputs: r\n") == [
        "yaml-number-too-large"
    ]


def test_an_override_past_the_limit_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="-p F: an integer of about 6,021 digits"):
        parse_override("F=0x" + "f" * 5000)
    assert parse_override("N=0x10") == ("N", 16)


def test_string_doubling_stops_at_the_limit() -> None:
    params = "".join(f'  a{i + 1}: "${{a{i} + a{i}}}"\n' for i in range(31))
    spec = f"archcomp: 1\nname: m\nparams:\n  a0: xx\n{params}" + (
        'inputs: {x: [B, 4]}\nnodes: [{id: r, op: relu, label: "${a31}"}]\noutputs: r\n'
    )
    with pytest.raises(SpecError) as info:
        load_graph(spec)
    assert "a string of over 10,000 characters" in info.value.format()


def test_interpolation_doubling_stops_at_the_limit() -> None:
    with pytest.raises(ExprError, match="string of over"):
        substitute("${a}${a}", {"a": "x" * (MAX_STRING // 2 + 1)})
    assert substitute("${a}${a}", {"a": "x" * (MAX_STRING // 2)}) == "x" * MAX_STRING


def test_list_doubling_counts_shared_lists_each_time() -> None:
    env: dict[str, object] = {"l0": [1]}
    with pytest.raises(ExprError, match="more than 10,000 elements"):
        for i in range(60):
            env[f"l{i + 1}"] = evaluate(f"[l{i}, l{i}]", env)
    assert len(env) == 12  # l12 would hold 2^13 lists and ints: refused, not built to 2^60


def test_a_list_of_the_limit_is_fine_and_one_more_is_not() -> None:
    assert len(evaluate("[a, 1]", {"a": list(range(MAX_ITEMS - 2))})) == 2
    with pytest.raises(ExprError):
        evaluate("[a, 1]", {"a": list(range(MAX_ITEMS - 1))})


def test_list_doubling_in_a_spec_is_a_located_error() -> None:
    params = "".join(f'  l{i + 1}: "${{[l{i}, l{i}]}}"\n' for i in range(60))
    spec = f"archcomp: 1\nname: m\nparams:\n  l0: [1]\n{params}" + (
        'inputs: {x: [B, 4]}\nnodes: [{id: fc, op: linear, out_features: "${l60}"}]\noutputs: fc\n'
    )
    with pytest.raises(SpecError) as info:
        load_graph(spec)
    (d,) = info.value.diagnostics
    assert d.code == "invalid-param" and d.loc is not None and d.loc.line == 16
