"""Copies 1..N-1 of a repeated block are clones of copy 0 (renamed): the IR must be exactly what
expanding every copy from the spec gives, and anything that can differ per copy (``${index}``)
must turn cloning off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from repeat_specs import FF_BLOCKS

from archcomp.frontend.expand import Expander
from archcomp.ir import Graph
from archcomp.passes.pipeline import load_graph

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p for p in (ROOT / "specs").glob("*.yaml"))
SMALL = {"gpt3": {"N": 3, "d_model": 96, "h": 4}, "bert_base": {"N": 3}, "gpt2": {"N": 3}}


CASES = {
    "nested_repeats_ties_two_outputs": f"""
archcomp: 1
name: t
inputs: {{x: [B, 8]}}
{FF_BLOCKS}
nodes:
  - {{id: f, op: ff, in: {{x: x, skip: x}}, repeat: 3, init: {{bias: zeros}}}}
  - {{id: tap, op: relu, in: f.mid}}
  - {{id: out, op: add, in: [f, tap]}}
outputs: {{y: out, z: f.mid}}
""",
    "shared_copies": f"""
archcomp: 1
name: t
inputs: {{x: [B, 8], skip: [B, 8]}}
{FF_BLOCKS}
nodes:
  - {{id: f, op: ff, in: {{x: x, skip: skip}}, repeat: 4, shared: true, label: Shared}}
outputs: f
""",
    "index_in_the_call": f"""
archcomp: 1
name: t
inputs: {{x: [B, 8]}}
{FF_BLOCKS}
nodes:
  - {{id: f, op: ff, in: {{x: x, skip: x}}, repeat: 3, d: "${{8 + 0 * index}}"}}
outputs: f
""",
    "absent_and_empty_inside": f"""
archcomp: 1
name: t
params: {{gate: false}}
inputs: {{x: [B, 8], skip: [B, 8]}}
{FF_BLOCKS}
  gated:
    label: "Gated ${{d}}"
    params: {{d: 8, gate: false}}
    inputs: [x, skip]
    nodes:
      - {{id: g, op: linear, out_features: "${{d}}", when: "${{gate}}"}}
      - {{id: e, op: sub, repeat: 0}}
      - {{id: s, op: add, in: [e, skip]}}
    outputs: s
nodes:
  - {{id: f, op: gated, in: {{x: x, skip: skip}}, repeat: 3, gate: "${{gate}}"}}
outputs: f
""",
}


def _ir(g: Graph) -> Any:
    def origin(o: Any) -> Any:
        return (o.doc.file, o.path)

    nodes = [
        (
            n.name,
            n.op.name,
            n.args,
            n.inputs,
            n.label,
            n.scopes,
            n.tie,
            n.shared_with,
            n.init,
            [(k, v, origin(o)) for k, v, o in n.init_defaults],
            n.outputs,
            origin(n.origin),
            n.meta.get("init"),
        )
        for n in g.nodes.values()
    ]
    origins = {k: origin(o) for k, o in g.output_origins.items()}
    return nodes, g.outputs, g.scope_inputs, origins, g.read_by_absent


def _both(monkeypatch: pytest.MonkeyPatch, source: Any, params: Any) -> tuple[Any, Any, int]:
    clones = []
    clone = Expander._clone

    def counting(self: Expander, *args: Any) -> None:
        clones.append(args[1].name)
        clone(self, *args)

    with monkeypatch.context() as m:
        m.setattr(Expander, "_clone", counting)
        fast = _ir(load_graph(source, params))
    with monkeypatch.context() as m:
        m.setattr(Expander, "_uses_index", lambda self, ns, block: True)
        slow = _ir(load_graph(source, params))
    return fast, slow, len(clones)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_expand_the_same_with_clones(
    monkeypatch: pytest.MonkeyPatch, path: Path
) -> None:
    fast, slow, clones = _both(monkeypatch, path, SMALL.get(path.stem))
    assert fast == slow
    if path.stem in SMALL:
        assert clones == 2  # copies 1 and 2 of the layers


@pytest.mark.parametrize("name", sorted(CASES))
def test_tricky_repeats_expand_the_same_with_clones(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    fast, slow, clones = _both(monkeypatch, CASES[name], None)
    assert fast == slow
    # copies of f, and of the repeat inside each f that was expanded rather than cloned
    expected = {
        "nested_repeats_ties_two_outputs": 3,
        "shared_copies": 4,
        "index_in_the_call": 3,
        "absent_and_empty_inside": 2,
    }
    assert clones == expected[name]


@pytest.mark.parametrize(
    "width",
    ["${8 * (index + 1)}", "${8 if '}' == '' or index == 0 else 8 * (index + 1)}"],
    ids=["plain", "brace_in_a_string"],
)
def test_index_inside_the_block_turns_cloning_off(
    monkeypatch: pytest.MonkeyPatch, width: str
) -> None:
    spec = """
archcomp: 1
name: t
inputs: {x: [B, 8]}
blocks:
  grow:
    inputs: [x]
    nodes:
      - {id: a, op: linear, out_features: "WIDTH"}
    outputs: a
nodes:
  - {id: g, op: grow, repeat: 3}
outputs: g
""".replace("WIDTH", width)
    fast, slow, clones = _both(monkeypatch, spec, None)
    assert clones == 0 and fast == slow
    widths = [n[10]["out"].shape[-1] for n in fast[0]]
    assert widths == [8, 16, 24]
