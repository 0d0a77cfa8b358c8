"""Spec text in generated source is only ever a literal: the literal builders read back as
exactly their input for any text, and hostile descriptions come out of ``--emit-python`` as
the class docstring, byte for byte. (The hostile corpus also imports such files under the
canary: tests/specs/hostile/emit/.)"""

from __future__ import annotations

import ast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import archcomp
from archcomp.backends.torch.emit import emit_python
from archcomp.backends.torch.literals import NotALiteral, comment, docstring, literal

HOSTILE = [
    'x"""\nimport os; os.system("true")\n"""',
    "ends in a backslash \\",
    "a NUL \x00 byte",
    "'''single''' and \"\"\"double\"\"\" quotes",
    "\\u0022\\u0022\\u0022 escapes that are not quotes",
    "bidi \u202e reversed \u2066 isolate \u200b zero-width \x9b C1",
    '"',
    "line\rbreak\u2028separator\x0bvertical",
]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_docstring_reads_back_as_exactly_the_text(text: str) -> None:
    assert ast.literal_eval(docstring(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_a_comment_is_one_comment_or_nothing(text: str) -> None:
    tree = ast.parse(f"x = 1{comment(text)}\ny = 2\n")
    assert [type(s) for s in tree.body] == [ast.Assign, ast.Assign]


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.lists(inner).map(tuple),
        max_leaves=10,
    )
)
def test_literal_reads_back_as_the_value(value: object) -> None:
    back = eval(literal(value), {"__builtins__": {"float": float}})  # archcomp's literal
    assert repr(back) == repr(value) and type(back) is type(value)  # repr: nan is nan


def test_objects_have_no_literal() -> None:
    with pytest.raises(NotALiteral):
        literal(object())


def _emitted(text: str) -> tuple[ast.Module, ast.ClassDef]:
    spec = {
        "archcomp": 1,
        "name": "m",
        "description": text,
        "params": {"s": {"type": "str", "default": text[:200], "doc": text}},
        "inputs": {"x": {"shape": ["B", 4], "doc": text}},
        "nodes": [
            {"id": "fc", "op": "linear", "out_features": 2, "label": text[:200], "doc": text}
        ],
        "outputs": "fc",
    }
    tree = ast.parse(emit_python(archcomp.build(spec, device="meta")))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "M"]
    return tree, cls


@pytest.mark.parametrize("desc", HOSTILE)
def test_a_hostile_description_is_the_emitted_class_docstring(desc: str) -> None:
    """The file differs from a benign spec's in the docstring's value and nowhere else."""
    tree, cls = _emitted(desc)
    assert ast.get_docstring(cls, clean=False) == desc.strip()
    plain, plain_cls = _emitted("benign")
    for c in (cls, plain_cls):
        doc = c.body[0]
        assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
        doc.value.value = ""
    assert ast.dump(tree) == ast.dump(plain)


def test_a_class_named_tied_leaves_the_tied_tuple_alone() -> None:
    """A spec or block called ``TIED`` gets another class name: the
    emitted file's ``TIED`` is the tuple its loading recipe reads (a class ``TIED`` bound it
    last, and ``set(missing) <= set(TIED)`` was a TypeError)."""
    text = """archcomp: 1
name: TIED
inputs: {x: {shape: [B, 4]}}
blocks:
  TIED:
    inputs: [h]
    nodes: [{id: self, op: relu, in: h}]
    outputs: self
  f:
    inputs: [h]
    nodes: [{id: '0', op: linear, out_features: 4, in: h}]
    outputs: '0'
nodes:
  - {id: a, op: TIED}
  - {id: b, op: f}
  - {id: c, op: linear, out_features: 4, tie: {weight: b.0.weight}}
outputs: {y: c}
"""
    model = archcomp.build(text, seed=0)
    ns: dict[str, object] = {}
    exec(compile(emit_python(model), "<emitted>", "exec"), ns)
    assert ns["TIED"] == ("c.weight",)
    classes = {k for k, v in ns.items() if isinstance(v, type) and v.__module__ == "builtins"}
    assert len(classes) == 3 and "TIED" not in classes, classes  # the model's, the blocks'
