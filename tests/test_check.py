"""The validation pipeline on valid specs: blocks, repeat, imports, params, outputs, schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import archcomp
from archcomp.base.errors import SpecError, UsageError
from archcomp.cli import main
from archcomp.ir.dims import Sym
from archcomp.passes.pipeline import load_graph

FF = """
archcomp: 1
blocks:
  feed_forward:
    label: Feed Forward
    params: {d_model: 512, d_ff: 2048}
    inputs: [x]
    nodes:
      - {id: w1, op: linear, out_features: "${d_ff}"}
      - {id: act, op: relu}
      - {id: w2, op: linear, out_features: "${d_model}"}
    outputs: w2
"""

MODEL = """
archcomp: 1
name: stack
params:
  N: {default: 3, doc: number of layers, min: 1}
  d_model: 16
  d_ff: ${4 * d_model}
imports: [blocks/ff.yaml]
inputs:
  x: {shape: [B, S, "${d_model}"]}
blocks:
  residual:
    params: {d_model: 8, d_ff: 32}
    inputs: [x]
    nodes:
      - {id: ff, op: feed_forward, d_model: "${d_model}", d_ff: "${d_ff * (index + 1)}"}
      - {id: add, op: add, in: [x, ff]}
    outputs: {y: add}
nodes:
  - {id: layers, op: residual, repeat: "${N}", d_model: "${d_model}", d_ff: "${d_ff}"}
  - {id: head, op: linear, out_features: 2}
outputs: {logits: head, hidden: layers.y}
"""


@pytest.fixture
def model(spec_file: Any) -> Path:
    spec_file(FF, "blocks/ff.yaml")
    return spec_file(MODEL, "model.yaml")


def test_blocks_repeat_and_imports(model: Path) -> None:
    g = archcomp.check(model)
    names = list(g.nodes)
    assert names[:4] == ["layers.0.ff.w1", "layers.0.ff.act", "layers.0.ff.w2", "layers.0.add"]
    assert len(names) == 13 and names[-1] == "head"
    # the copy index reaches expressions: d_ff grows with it
    assert [g.nodes[f"layers.{k}.ff.w1"].args.out_features for k in range(3)] == [64, 128, 192]
    # copy k+1 reads copy k's output; in_features is inferred
    assert g.nodes["layers.1.ff.w1"].inputs["x"] == archcomp.ir.Ref("layers.0.add", "out")
    assert g.nodes["layers.0.ff.w1"].args.in_features == 16
    B, S = Sym.symbol("B"), Sym.symbol("S")
    assert g.output_types["logits"].shape == (B, S, 2)  # type: ignore[union-attr]
    assert g.outputs["hidden"] == archcomp.ir.Ref("layers.2.add", "out")
    scopes = g.nodes["layers.1.ff.w2"].scopes
    assert [s.name for s in scopes] == ["layers.1", "layers.1.ff"]
    assert scopes[0].repeat == 3 and scopes[0].repeat_param == "N" and scopes[0].index == 1
    assert scopes[1].label == "Feed Forward"


def test_param_overrides_recompute_derived_params(model: Path) -> None:
    g = archcomp.check(model, {"N": 2, "d_model": 8})
    assert g.params == {"N": 2, "d_model": 8, "d_ff": 32}
    assert len(g.nodes) == 9
    assert g.nodes["layers.1.ff.w1"].args.out_features == 64


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"N": "3"}, "param 'N' must be int"),
        ({"N": 0}, "below its minimum 1"),
        ({"n": 2}, "unknown param 'n' (did you mean 'N'?)"),
        ({"N": True}, "param 'N' must be int"),
    ],
)
def test_bad_overrides_are_usage_errors(model: Path, params: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as exc:
        archcomp.check(model, params)
    assert message in str(exc.value)


def test_cli_params_and_json(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(model), "-p", "N=2", "-p", "d_model=8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert out["ok"] and out["nodes"] == 9
    assert out["outputs"]["logits"] == ["B", "S", 2]
    assert main(["check", str(model), "-p", "N=two"]) == 2
    assert "param 'N' must be int" in capsys.readouterr().err
    assert main(["check", str(model), "-p", "N"]) == 2


def test_library_file_checks(spec_file: Any, capsys: pytest.CaptureFixture[str]) -> None:
    lib = spec_file(FF, "lib.yaml")
    assert main(["check", str(lib)]) == 0
    assert "library of 1 blocks (feed_forward)" in capsys.readouterr().out


def test_yaml_string_and_mapping_sources() -> None:
    text = (
        "archcomp: 1\nname: t\ninputs: {x: [B, 3]}\n"
        "nodes: [{id: fc, op: linear, out_features: 2}]\noutputs: fc\n"
    )
    assert archcomp.check(text).name == "t"
    import yaml

    assert archcomp.check(yaml.safe_load(text)).output_types["fc"] is not None


def test_roles_defaults_and_lists() -> None:
    text = """
archcomp: 1
name: t
inputs: {a: [B, 4], b: [B, 4], c: [B, 4]}
nodes:
  - {id: s, op: add, in: [a, b, c]}
  - {id: p, op: mul, in: {x: [s, a]}}
outputs: p
"""
    g = archcomp.check(text)
    assert [str(r) for r in g.nodes["s"].refs()] == ["a", "b", "c"]
    assert [str(r) for r in g.nodes["p"].refs()] == ["s.out", "a"]


def test_shared_repeat_and_tie() -> None:
    text = """
archcomp: 1
name: t
inputs: {ids: {shape: [B, S], dtype: int64}}
nodes:
  - {id: emb, op: embedding, num_embeddings: 50, embedding_dim: 8}
  - {id: mix, op: linear, out_features: 8, repeat: 3, shared: true}
  - {id: head, op: linear, out_features: 50, bias: false, tie: {weight: emb.weight}}
outputs: head
"""
    g = archcomp.check(text)
    assert g.nodes["mix.0"].shared_with is None
    assert g.nodes["mix.2"].shared_with == "mix.0"
    assert g.nodes["head"].tie == {"weight": ("emb", "weight")}


def test_every_error_is_reported_not_only_the_first() -> None:
    text = """
archcomp: 1
name: t
inputs: {x: [B, 4]}
nodes:
  - {id: a, op: linear, out_features: "8"}
  - {id: b, op: relu, in: nowhere}
  - {id: c, op: linaer, in: x}
outputs: a
"""
    with pytest.raises(SpecError) as exc:
        archcomp.check(text)
    assert [d.code for d in exc.value.diagnostics] == [
        "invalid-value",
        "undefined-reference",
        "unknown-op",
    ]
    assert [d.loc.line for d in exc.value.diagnostics if d.loc] == [6, 7, 8]


def test_schema_command_validates_shipped_specs(capsys: pytest.CaptureFixture[str]) -> None:
    import jsonschema
    import yaml

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    root = Path(__file__).resolve().parent.parent
    for spec in sorted((root / "specs").rglob("*.yaml")):
        if spec.parent.name == "hf":
            continue  # checkpoint mappings, not specs (tests/test_checkpoint_mappings.py)
        errors = list(validator.iter_errors(yaml.safe_load(spec.read_text())))
        assert not errors, (spec, errors[0].message)
    bad = {"archcomp": 1, "name": "x", "nodes": [{"id": "a", "op": "linear", "out_feature": 3}]}
    assert list(validator.iter_errors(bad))


def test_a_symbolic_size_explosion_is_a_located_error_at_the_node(tmp_path: Path) -> None:
    """Sums of ten symbols on five axes, broadcast and flattened: 10^5 terms, refused."""
    k, n = 5, 10
    ins = ""
    for j in range(k):
        for i in range(n):
            shape = ["1"] * k
            shape[j] = f"S{j}_{i}"
            ins += f"  a{j}_{i}: [{', '.join(shape)}]\n"
    nodes = "".join(
        f"  - {{id: c{j}, op: concat, in: [{', '.join(f'a{j}_{i}' for i in range(n))}], "
        f"dim: {j}}}\n"
        for j in range(k)
    )
    nodes += f"  - {{id: s, op: add, in: [{', '.join(f'c{j}' for j in range(k))}]}}\n"
    nodes += "  - {id: f, op: flatten, start_dim: 0}\n"
    spec = tmp_path / "s.yaml"
    spec.write_text(f"archcomp: 1\nname: m\ninputs:\n{ins}nodes:\n{nodes}outputs: f\n")
    with pytest.raises(SpecError) as info:
        load_graph(spec)
    (d,) = info.value.diagnostics
    line = spec.read_text().splitlines().index("  - {id: f, op: flatten, start_dim: 0}") + 1
    assert d.node == "f" and d.loc is not None and d.loc.line == line
    assert "too large to follow symbolically" in d.message


def test_a_slice_bound_past_int64_is_refused() -> None:
    spec = "archcomp: 1\nname: m\ninputs: {x: [B, 4]}\nnodes:\n"
    spec += "  - {id: s, op: index, at: '99999999999999999999999999:'}\noutputs: s\n"
    with pytest.raises(SpecError, match="is past int64"):
        load_graph(spec)


def test_recurrent_layers_and_example_dims_are_bounded() -> None:
    head = "archcomp: 1\nname: m\ninputs: {x: [B, S, 4]}\n"
    lstm = "nodes:\n  - {id: l, op: lstm, hidden_size: 4, num_layers: 1000000000}\noutputs: l\n"
    with pytest.raises(SpecError, match="less than or equal to 1024"):
        load_graph(head + lstm)  # not a table of 8 * 10^9 weight shapes
    for bad in ("-7", "0", str(2**63)):
        with pytest.raises(SpecError, match="'B': input should be"):
            load_graph(head.replace("inputs", f"dims: {{B: {bad}}}\ninputs") + lstm)


def test_example_sizes_a_tensor_cannot_have_are_refused() -> None:
    """dims feed summaries and MACs; at 9e18 x 9e18 no tensor exists (nor prints its MACs)."""
    spec = (
        "archcomp: 1\nname: m\ndims: {A: 9000000000000000000, B: 9000000000000000000}\n"
        "inputs: {x: [A, B, 4]}\nnodes:\n  - {id: fc, op: linear, out_features: 2}\noutputs: fc\n"
    )
    with pytest.raises(SpecError) as info:
        load_graph(spec)
    assert [d.loc.line for d in info.value.diagnostics if d.loc] == [4, 6]
    assert "at the example sizes in 'dims'" in info.value.format()
    assert load_graph(spec.replace("9000000000000000000", "4096")).nodes


def test_summary_of_a_formula_too_large_to_keep_symbolic_gives_its_value() -> None:
    """A matmul of 100-term dims: its MACs formula would have 10^6 terms; the summary gives
    the value at the example sizes instead of failing."""
    n = 100
    ins = "".join(f"  p{i}: [P{i}, 1]\n  q{i}: [1, Q{i}]\n  r{i}: [1, R{i}]\n" for i in range(n))
    cat = "  - {{id: c{0}, op: concat, in: [{1}], dim: {2}}}\n"
    nodes = cat.format("p", ", ".join(f"p{i}" for i in range(n)), 0)
    nodes += cat.format("q", ", ".join(f"q{i}" for i in range(n)), 1)
    nodes += cat.format("r", ", ".join(f"r{i}" for i in range(n)), 1)
    nodes += "  - {id: x, op: add, in: [cp, cq]}\n"
    nodes += "  - {id: qt, op: transpose, in: cq, dim0: 0, dim1: 1}\n"
    nodes += "  - {id: y, op: add, in: [qt, cr]}\n  - {id: m, op: matmul, in: [x, y]}\n"
    s = archcomp.summary(f"archcomp: 1\nname: m\ninputs:\n{ins}nodes:\n{nodes}outputs: m\n")
    assert s.macs == n**3  # every symbol at 1: P, Q and R each sum to 100
