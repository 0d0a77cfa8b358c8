"""Nodes present or absent by a param (``when``), empty stacks (``repeat: 0``), repeats of ops
whose first input is a list, and ``${...}`` in labels.

An absent node leaves no trace: the IR, the generated forward, the state dict and the drawing
are those of the spec written without it, its readers wired to its first input. Errors (an
absent node's other results, ties to it) are golden cases in tests/specs/invalid/blocks/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lowering import compile_for_test, run, spec, where
from torch.testing import assert_close

import archcomp
from archcomp import SpecError, load_graph
from archcomp.backends.graphviz import DrawOptions, draw, plan
from archcomp.base.errors import UsageError
from archcomp.ir import Graph

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def _code_and_state(text: str, params: dict[str, object] | None = None) -> tuple[str, list[str]]:
    gm = compile_for_test(load_graph(text, params))
    return gm.code, sorted(gm.state_dict())


# -- when ------------------------------------------------------------------------------------

OPTIONAL_PROJ = """
archcomp: 1
name: m
params: {proj: false}
inputs: {x: [B, 4]}
nodes:
  - {id: fc, op: linear, out_features: 4}
  - {id: proj, op: linear, out_features: 4, bias: false, when: "${proj}"}
  - {id: act, op: relu}
  - {id: res, op: add, in: [act, x]}
outputs: res
"""

WITHOUT_PROJ = """
archcomp: 1
name: m
params: {proj: false}
inputs: {x: [B, 4]}
nodes:
  - {id: fc, op: linear, out_features: 4}
  - {id: act, op: relu}
  - {id: res, op: add, in: [act, x]}
outputs: res
"""


def test_absent_node_leaves_no_trace_in_code_state_or_drawing() -> None:
    assert _code_and_state(OPTIONAL_PROJ) == _code_and_state(WITHOUT_PROJ)
    code, state = _code_and_state(OPTIONAL_PROJ)
    assert "proj" not in code and not any(k.startswith("proj") for k in state)
    assert draw(OPTIONAL_PROJ).source == draw(WITHOUT_PROJ).source
    g = load_graph(OPTIONAL_PROJ)
    assert list(g.nodes) == ["fc", "act", "res"]
    assert [str(r) for r in g.nodes["act"].refs()] == ["fc.out"]


def test_present_node_is_the_node_without_when() -> None:
    gm = compile_for_test(load_graph(OPTIONAL_PROJ, {"proj": True}))
    assert "proj" in gm.code and "proj.weight" in gm.state_dict()
    x = torch.randn(3, 4)
    want = F.relu(F.linear(gm.fc(x), gm.proj.weight)) + x
    assert_close(run(gm, x)["res"], want)
    plain = OPTIONAL_PROJ.replace(', when: "${proj}"', "")
    assert _code_and_state(OPTIONAL_PROJ, {"proj": True}) == _code_and_state(plain)


def test_absent_node_with_a_list_input_passes_its_first_entry() -> None:
    text = spec(
        "x: [B, 4]\n  y: [B, 4]",
        """
        - {id: cat, op: concat, in: [x, y], when: "${1 > 2}"}
        - {id: n, op: relu, in: cat}
        """,
    )
    g = load_graph(text)
    assert [str(r) for r in g.nodes["n"].refs()] == ["x"]
    assert "y" in g.inputs  # read only by the absent node: not an unused input
    gm = compile_for_test(g)
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    assert_close(run(gm, x, y)["y"], F.relu(x))


def test_node_read_only_by_absent_nodes_is_unused_with_a_hint() -> None:
    text = spec(
        "x: [B, 4]",
        """
        - {id: gate, op: linear, in: x, out_features: 4}
        - {id: g, op: mul, in: [x, gate], when: false}
        - {id: n, op: relu, in: g}
        """,
    )
    with pytest.raises(SpecError) as info:
        load_graph(text)
    (d,) = info.value.diagnostics
    assert d.code == "unused-node" and d.node == "gate"
    assert d.hint is not None and "its readers are absent" in d.hint


SHORTCUT_BLOCKS = """
blocks:
  shortcut:
    params: {c: 8, stride: 1}
    inputs: [x]
    nodes:
      - {id: conv, op: conv2d, out_channels: "${c}", kernel_size: 1, stride: "${stride}",
         bias: false}
      - {id: bn, op: batch_norm}
    outputs: bn
  block:
    params: {c: 8, stride: 1, down: false}
    inputs: [x]
    nodes:
      - {id: conv1, op: conv2d, in: x, out_channels: "${c}", kernel_size: 3,
         stride: "${stride}", padding: 1, bias: false}
      - {id: relu1, op: relu}
      - {id: downsample, op: shortcut, in: x, c: "${c}", stride: "${stride}",
         when: "${down}"}
      - {id: add, op: add, in: [relu1, downsample]}
      - {id: relu, op: relu}
    outputs: relu
"""

STAGE = f"""
archcomp: 1
name: stage
params: {{N: 3}}
inputs: {{x: [B, 4, 8, 8]}}
{SHORTCUT_BLOCKS}
nodes:
  - {{id: layer, op: block, repeat: "${{N}}", c: 8, stride: "${{2 if index == 0 else 1}}",
     down: "${{index == 0}}"}}
outputs: layer
"""


def test_block_call_absent_by_index_matches_torch() -> None:
    """One block covers both shortcuts: copy 0 projects (conv 1x1/2 + BN), the others add x."""
    g = load_graph(STAGE)
    names = list(g.nodes)
    assert "layer.0.downsample.conv" in names and "layer.0.downsample.bn" in names
    assert not any(n.startswith(("layer.1.downsample", "layer.2.downsample")) for n in names)
    assert [str(r) for r in g.nodes["layer.1.add"].refs()] == [
        "layer.1.relu1.out",
        "layer.0.relu.out",
    ]
    gm = compile_for_test(g).eval()
    with torch.no_grad():
        for name, buf in gm.named_buffers():  # non-trivial running stats
            if name.endswith("running_mean"):
                buf.uniform_(-0.5, 0.5)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)

    def bn(m: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, eps=m.eps)

    def block(k: int, t: torch.Tensor) -> torch.Tensor:
        b = gm.get_submodule(f"layer.{k}")
        out = F.relu(F.conv2d(t, b.conv1.weight, stride=2 if k == 0 else 1, padding=1))
        if k > 0:
            return F.relu(out + t)
        short = bn(b.downsample.bn, F.conv2d(t, b.downsample.conv.weight, stride=2))
        return F.relu(out + short)

    want = block(2, block(1, block(0, x)))
    got = run(gm, x)["layer"]
    assert_close(got, want)
    (gx,) = torch.autograd.grad(got.sum(), x)
    (wx,) = torch.autograd.grad(want.sum(), x)
    assert_close(gx, wx)


def test_when_inside_a_cloned_repeat() -> None:
    """Copies cloned from copy 0 keep its absent nodes (their readers read the copy's input)."""
    text = f"""
archcomp: 1
name: m
inputs: {{x: [B, 8, 4, 4]}}
{SHORTCUT_BLOCKS}
nodes:
  - {{id: layer, op: block, repeat: 3}}
outputs: layer
"""
    g = load_graph(text)
    assert not any("downsample" in n for n in g.nodes)
    for k in (1, 2):
        assert [str(r) for r in g.nodes[f"layer.{k}.add"].refs()] == [
            f"layer.{k}.relu1.out",
            f"layer.{k - 1}.relu.out",
        ]


def test_when_must_be_a_bool() -> None:
    text = spec("x: [B, 4]", '- {id: n, op: relu, when: "${1}"}')
    with pytest.raises(SpecError) as info:
        load_graph(text)
    (d,) = info.value.diagnostics
    assert (d.code, d.message) == ("invalid-value", "'when' must be a bool, found 1")
    assert d.loc is not None and (d.loc.line, d.loc.col) == where(text, '"${1}"')


ALTERNATIVES = """
archcomp: 1
name: m
params: {first_dense: 1}
inputs: {x: [B, 4]}
blocks:
  dense:
    inputs: [x]
    nodes:
      - {id: up, op: linear, out_features: 6}
      - {id: down, op: linear, out_features: 4}
    outputs: down
  layer:
    params: {first_dense: 1}
    inputs: [x]
    nodes:
      - {id: ff, op: dense, when: "${index < first_dense}"}
      - {id: ff, op: linear, out_features: 4, bias: false, when: "${index >= first_dense}"}
      - {id: res, op: add, in: [x, ff]}
    outputs: res
nodes:
  - {id: layers, op: layer, repeat: 3, first_dense: "${first_dense}"}
outputs: layers
"""


def test_alternatives_of_one_id_keep_its_keys_and_compute_the_one_present() -> None:
    """Nodes of one id that each have a 'when': the present one is the node, under that id."""
    model = archcomp.build(ALTERNATIVES)
    assert sorted(model.state_dict()) == [
        "layers.0.ff.down.bias",
        "layers.0.ff.down.weight",
        "layers.0.ff.up.bias",
        "layers.0.ff.up.weight",
        "layers.1.ff.weight",
        "layers.2.ff.weight",
    ]
    x, sd = torch.randn(3, 4), model.state_dict()
    h = x + F.linear(F.linear(x, sd["layers.0.ff.up.weight"], sd["layers.0.ff.up.bias"]),
                     sd["layers.0.ff.down.weight"], sd["layers.0.ff.down.bias"])  # fmt: skip
    for k in (1, 2):
        h = h + F.linear(h, sd[f"layers.{k}.ff.weight"])
    with torch.no_grad():
        assert_close(model(x), h)
    none = archcomp.build(ALTERNATIVES, params={"first_dense": 0})
    assert not any(k.startswith("layers.0.ff.up") for k in none.state_dict())


def test_two_alternatives_present_is_an_error_at_the_second_when() -> None:
    text = ALTERNATIVES.replace('"${index >= first_dense}"', '"${index >= 0}"')
    with pytest.raises(SpecError) as info:
        load_graph(text)
    (d,) = info.value.diagnostics
    assert d.code == "duplicate-id" and "id 'ff' is present twice" in d.message
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if '"${index >= 0}"' in ln)
    assert d.loc is not None and d.loc.line == line


def test_a_repeated_id_without_when_on_each_is_still_a_duplicate() -> None:
    text = ALTERNATIVES.replace(', when: "${index >= first_dense}"', "")
    with pytest.raises(SpecError) as info:
        load_graph(text)
    assert [d.code for d in info.value.diagnostics] == ["duplicate-id"]


# -- repeat: 0 -------------------------------------------------------------------------------


def test_repeat_zero_is_an_empty_stack() -> None:
    text = STAGE.replace("outputs: layer", "  - {id: head, op: relu, in: layer}\noutputs: head")
    g = load_graph(text, {"N": 0})
    assert list(g.nodes) == ["head"]
    assert [str(r) for r in g.nodes["head"].refs()] == ["x"]
    gm = compile_for_test(g)
    x = torch.randn(1, 4, 8, 8)
    assert_close(run(gm, x)["head"], F.relu(x))
    assert dict(gm.named_parameters()) == {}


def test_repeat_zero_of_an_op_and_as_the_output() -> None:
    text = spec("x: [B, 4]", '- {id: n, op: linear, out_features: 4, repeat: "${0}"}')
    g = load_graph(text)
    assert g.nodes == {} and str(g.outputs["y"]) == "x"
    gm = compile_for_test(g)
    x = torch.randn(2, 4)
    assert torch.equal(run(gm, x)["y"], x)


def _repeat_params(g: Graph) -> set[str]:
    return {s.repeat_param for n in g.nodes.values() for s in n.scopes if s.repeat_param} & set(
        g.params
    )


def _copies(g: Graph, name: str) -> int:
    return sum(s.repeat_param == name for n in g.nodes.values() for s in n.scopes)


# Where 0 copies do not make a model: the spec's params say min 1, and why is written here.
ZERO_MAKES_NO_MODEL = {
    # no encoder layers and no decoder layers: the source sentence is never read
    ("transformer", "N"),
}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_take_zero_for_their_repeats(path: Path) -> None:
    g = load_graph(path)
    for name in sorted(_repeat_params(g)):
        if (path.stem, name) in ZERO_MAKES_NO_MODEL:
            with pytest.raises(UsageError, match="below its minimum 1"):
                load_graph(path, {name: 0})
            continue
        empty = load_graph(path, {name: 0})
        # fewer copies named by it (a block's own param may share the name: BART's decoder
        # repeats its N, which the spec sets from N_dec)
        assert _copies(empty, name) < _copies(g, name)
        assert len(empty.nodes) < len(g.nodes)
        assert empty.output_types == g.output_types
        model = archcomp.build(path, {name: 0}, device="meta")
        assert sum(p.numel() for p in model.parameters()) < archcomp.summary(path).parameters


# -- repeat of an op whose first input is a list ---------------------------------------------


def test_repeat_of_list_input_ops_replaces_the_first_entry() -> None:
    text = spec(
        "x: [B, 4]\n  y: [B, 4]",
        """
        - {id: s, op: add, in: [x, y], repeat: 3}
        - {id: n, op: concat, in: [s, y, x], repeat: 2}
        """,
    )
    g = load_graph(text)
    assert [str(r) for r in g.nodes["s.2"].refs()] == ["s.1.out", "y"]
    assert [str(r) for r in g.nodes["n.1"].refs()] == ["n.0.out", "y", "x"]
    gm = compile_for_test(g)
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    s = x + y + y + y
    assert_close(run(gm, x, y)["y"], torch.cat([torch.cat([s, y, x], -1), y, x], -1))
    assert g.output_types["y"] is not None and g.output_types["y"].shape[-1] == 20


# -- labels ----------------------------------------------------------------------------------


def test_labels_take_expressions_and_are_drawn_with_their_values() -> None:
    text = """
archcomp: 1
name: m
params: {c: 16}
inputs: {x: [B, 3, 8, 8]}
blocks:
  convs:
    label: "conv-${c} ×${2 * n}"
    params: {c: 8, n: 1}
    inputs: [x]
    nodes:
      - {id: a, op: conv2d, out_channels: "${c}", kernel_size: 3, label: "conv3-${c}"}
      - {id: b, op: relu}
    outputs: b
nodes:
  - {id: f, op: convs, c: "${c}", n: 2}
  - {id: g, op: convs, c: 4, repeat: 2}
  - {id: flat, op: avg_pool2d, kernel_size: 2, label: "${c}"}
outputs: flat
"""
    g = load_graph(text)
    assert g.nodes["f.a"].label == "conv3-16"
    assert g.nodes["g.1.a"].label == "conv3-4"
    assert g.nodes["flat"].label == "16"  # a whole expression is drawn as its value's text
    assert {s.name: s.label for n in g.nodes.values() for s in n.scopes} == {
        "f": "conv-16 ×4",
        "g.0": "conv-4 ×2",
        "g.1": "conv-4 ×2",
    }
    labels = {b.label for b in plan(g, DrawOptions(depth=None)).boxes.values()}
    assert "conv-16 ×4" in labels and "16" in labels
    drawn = plan(g, DrawOptions(expand=("convs",))).boxes.values()
    assert any(b.label.startswith("conv3-16") for b in drawn)


def test_copies_that_differ_are_drawn_once_per_run() -> None:
    """Copy 0 (projection shortcut) and copies 1-2 (identity) each get a frame, and an edge
    leads from one to the next; the absent shortcuts of copies 1-2 are not drawn."""
    d = plan(load_graph(STAGE), DrawOptions())
    frames = {f.label: f for f in d.frames.values()}
    assert {"N× (N = 3)", "copy 0", "copies 1–2 (2×)"} <= set(frames)
    assert frames["copy 0"].parent == frames["copies 1–2 (2×)"].parent
    boxes = {b.id: b for b in d.boxes.values()}
    assert "layer.0.downsample" in boxes and "layer.1.conv1" in boxes
    assert not any(b.startswith(("layer.1.downsample", "layer.2")) for b in boxes)
    assert boxes["layer.0.conv1"].frame == frames["copy 0"].id
    assert boxes["layer.1.conv1"].frame == frames["copies 1–2 (2×)"].id
    edges = {(e.src, e.dst) for e in d.edges}
    assert ("layer.0.relu", "layer.1.conv1") in edges  # copy 0 -> copy 1
    assert ("layer.0.relu", "layer.1.add") in edges  # copy 1's identity shortcut
    assert not any(
        e.src.startswith("layer.1") and e.dst.startswith("layer.1.conv1") for e in d.edges
    )
    # copies that are alike stay one frame, as before
    same = (
        STAGE.replace('down: "${index == 0}"', "down: false")
        .replace('stride: "${2 if index == 0 else 1}"', "stride: 1")
        .replace("x: [B, 4, 8, 8]", "x: [B, 8, 8, 8]")
    )
    alike = plan(load_graph(same), DrawOptions())
    assert not any(f.label and f.label.startswith("cop") for f in alike.frames.values())
