"""Repeated blocks compile to classes: one generated forward per structure, one instance per copy.

The bar: a model compiled this way holds exactly the weights, and computes exactly the outputs,
of the same spec compiled inline (every node in the model's forward, as before block classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import check_compile_export_emit
from numerics import assert_same
from repeat_specs import FF_BLOCKS
from torch import nn

import archcomp
from archcomp.backends.torch import codegen
from archcomp.backends.torch.blocks import BlockPlan
from archcomp.backends.torch.module import CompiledBlock

ROOT = Path(__file__).resolve().parent.parent


CASES: dict[str, tuple[str, tuple[tuple[int, ...], ...]]] = {
    "two_results_nested_repeat_tie": (
        f"""
archcomp: 1
name: t
inputs: {{x: [B, 8]}}
{FF_BLOCKS}
nodes:
  - {{id: f, op: ff, in: {{x: x, skip: x}}, repeat: 3}}
  - {{id: tap, op: relu, in: f.mid}}
  - {{id: out, op: add, in: [f, tap]}}
outputs: {{y: out, z: f.mid}}
""",
        ((4, 8),),
    ),
    "shared_copies": (
        f"""
archcomp: 1
name: t
inputs: {{x: [B, 8], skip: [B, 8]}}
{FF_BLOCKS}
nodes:
  - {{id: f, op: ff, in: {{x: x, skip: skip}}, repeat: 3, shared: true}}
outputs: f
""",
        ((4, 8), (4, 8)),
    ),
    "copies_of_two_shapes": (
        """
archcomp: 1
name: t
inputs: {x: [B, 8]}
blocks:
  grow:
    inputs: [x]
    nodes:
      - {id: a, op: linear, out_features: "${8 * (index % 2 + 1)}"}
      - {id: r, op: relu}
    outputs: r
nodes:
  - {id: g, op: grow, repeat: 4}
outputs: g
""",
        ((4, 8),),
    ),
}


def _inline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codegen, "plan_blocks", lambda g, taken=(): BlockPlan())


def _pair(
    monkeypatch: pytest.MonkeyPatch, spec: Any, params: Any = None
) -> tuple[nn.Module, nn.Module]:
    blocks = archcomp.build(spec, params, seed=3)
    with monkeypatch.context() as m:
        _inline(m)
        inline = archcomp.build(spec, params, seed=3)
    return blocks, inline


def _same(a: nn.Module, b: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    a.eval()
    b.eval()
    with torch.no_grad():
        ya, yb = a(*inputs), b(*inputs)
    if isinstance(ya, dict):
        assert list(ya) == list(yb)
        for k in ya:
            assert_same(ya[k], yb[k])
    else:
        assert_same(ya, yb)


def test_gpt2_layers_are_instances_of_one_generated_class(monkeypatch) -> None:
    model, inline = _pair(
        monkeypatch, ROOT / "specs" / "gpt2.yaml", {"N": 3, "d_model": 64, "h": 4}
    )
    blocks = list(model.h_)
    assert len(blocks) == 3 and all(isinstance(b, CompiledBlock) for b in blocks)
    assert len({type(b) for b in blocks}) == 1 and type(blocks[0]).__name__ == "GptBlock"
    code = model.code
    assert "h__0 = self.h_[0](drop)" in code and "h__2 = self.h_[2](h__1)" in code
    assert "attn" not in code  # the layers' insides are the class's forward
    block = blocks[0].code
    assert "def forward(self, x):" in block
    assert "ln_1 = self.ln_1(x)" in block and "mlp = self.mlp(ln_2)" in block
    assert "fc" not in block  # the MLP block's insides are its own class's forward
    assert type(blocks[0].mlp).__name__ == "Mlp"
    assert all(
        type(b.mlp) is type(blocks[0].mlp) and b.mlp is not blocks[0].mlp for b in blocks[1:]
    )
    assert "fc = self.fc(x)" in blocks[0].mlp.code and "return drop" in blocks[0].mlp.code
    assert "res_2 = res_1 + mlp;" in block and block.rstrip().endswith("return res_2")
    assert "h_.1.attn.q_proj.weight" in model.state_dict()
    ids = torch.randint(0, 50257, (2, 7))
    _same(model, inline, (ids,))


@pytest.mark.parametrize("name", sorted(CASES))
def test_blocks_compute_what_inline_compilation_does(monkeypatch, name: str) -> None:
    spec, shapes = CASES[name]
    model, inline = _pair(monkeypatch, spec)
    inputs = tuple(torch.randn(s) for s in shapes)
    _same(model, inline, inputs)


def test_copies_of_different_shapes_get_their_own_classes(monkeypatch) -> None:
    model, _ = _pair(monkeypatch, CASES["copies_of_two_shapes"][0])
    kinds = [type(b).__name__ for b in model.g]
    # copy 0 reads the 8-wide input, copy 2 the 16-wide output of copy 1: three structures
    assert kinds == ["Grow", "Grow2", "Grow3", "Grow2"]
    assert model.g[1].a.out_features == 16 and model.g[2].a.in_features == 16


def test_shared_copies_call_the_first_copy(monkeypatch) -> None:
    model, _ = _pair(monkeypatch, CASES["shared_copies"][0])
    assert len(model.f) == 1
    assert model.code.count("self.f[0](") == 3
    x, skip = torch.randn(2, 8), torch.randn(2, 8)
    first = model.f[0]
    with torch.no_grad():
        want = first(first(first(x, skip), skip), skip)
        assert_same(model(x, skip), want)


def test_shared_copies_summarize_and_build_from_the_cli(tmp_path: Path) -> None:
    """A shared copy's nodes of no module (its add) have no module in copy 0 either: the
    summary (and so ``archcomp build``, which prints it) took their names for module paths
    and ended in an internal error (exit 3). The weights are counted once."""
    from archcomp.cli.main import main

    spec = tmp_path / "shared.yaml"
    spec.write_text(CASES["shared_copies"][0])
    model = archcomp.build(spec, seed=0)
    s = archcomp.summary(model)
    assert s.parameters == sum(p.numel() for p in model.f[0].parameters())
    assert main(["summary", str(spec)]) == 0
    assert main(["build", str(spec), "-o", str(tmp_path / "s.safetensors")]) == 0


def test_two_results_and_a_tie_inside_a_copy(monkeypatch) -> None:
    model, _ = _pair(monkeypatch, CASES["two_results_nested_repeat_tie"][0])
    assert model.f[0].a.weight is model.f[0].b.weight
    assert model.f[0].a.weight is not model.f[1].a.weight
    # only the last copy's second result is read outside: its class returns both
    assert "def forward(self, x):" in model.f[0].code  # x feeds both ports of copy 0
    assert "return (inner_1, s)" in model.f[2].code
    assert "-> mid: (B, 8), y: (B, 8)" in model.f[2].code  # named as the block names them
    assert "f_2_mid = f_2[0]" in model.code and "f_2_y = f_2[1]" in model.code


@pytest.mark.parametrize("name", ["gpt2", "shared_copies", "two_results_nested_repeat_tie"])
def test_compile_export_and_emitted_source_with_block_classes(name: str, tmp_path: Path) -> None:
    if name == "gpt2":
        model = archcomp.build(ROOT / "specs" / "gpt2.yaml", {"N": 2, "d_model": 32, "h": 2})
        inputs: tuple[torch.Tensor, ...] = (torch.randint(0, 50257, (2, 5)),)
    else:
        spec, shapes = CASES[name]
        model = archcomp.build(spec, seed=0)
        inputs = tuple(torch.randn(s) for s in shapes)
    check_compile_export_emit(model, inputs, tmp_path)


def test_emitted_source_defines_each_block_class_once() -> None:
    from archcomp.backends.torch.emit import emit_python

    model = archcomp.build(ROOT / "specs" / "gpt2.yaml", {"N": 3}, device="meta")
    source = emit_python(model)
    assert source.count("class GptBlock(nn.Module):") == 1
    assert source.count("class Mlp(nn.Module):") == 1  # a block used once per layer, nested
    assert "        self.mlp = Mlp()\n" in source
    assert "for _ in range(3):\n            layer = GptBlock()" in source


@pytest.mark.parametrize("name", ["transformer", "bert_base", "gpt2", "gpt3"])
def test_library_specs_with_repeats_match_inline_compilation(monkeypatch, name: str) -> None:
    from spec_library import LIBRARY, example_inputs

    from archcomp.passes.pipeline import load_graph

    path, params = ROOT / "specs" / f"{name}.yaml", LIBRARY[name][1]
    model, inline = _pair(monkeypatch, path, params)
    assert any(isinstance(m, CompiledBlock) for m in model.modules())
    inputs = example_inputs(load_graph(path, params), torch.Generator().manual_seed(0))
    _same(model, inline, tuple(inputs.values()))


GAPS = {
    # copy 0 (dropout 0) is a function call, copies 1 and 2 are modules: keys "1", "2" only
    "op_copy_0_without_module": (
        """
archcomp: 1
name: t
inputs: {q: [B, 4, 8]}
nodes:
  - {id: s, op: scaled_dot_product_attention, in: [q, q, q], repeat: 3,
     dropout: "${0.1 * index}"}
outputs: s
""",
        ((2, 4, 8),),
    ),
    # copy 0 reads q, computed after it starts: compiled inline, and it has no modules
    "block_copy_0_inline": (
        """
archcomp: 1
name: t
inputs: {x: [B, 8]}
blocks:
  mix:
    inputs: [x, y]
    nodes:
      - {id: a, op: relu, in: x}
      - {id: b, op: add, in: [a, y]}
    outputs: b
nodes:
  - {id: f, op: mix, in: {x: x, y: q}, repeat: 3}
  - {id: q, op: sigmoid, in: x}
outputs: f
""",
        ((2, 8),),
    ),
}


@pytest.mark.parametrize("name", sorted(GAPS))
def test_repeats_with_a_gap_in_their_modules_run_and_emit(name: str, tmp_path: Path) -> None:
    spec, shapes = GAPS[name]
    model = archcomp.build(spec, seed=0)
    container = next(iter(model.children()))
    assert isinstance(container, nn.ModuleList) and "0" not in container._modules
    assert "getattr(self." in model.code  # a ModuleList with a gap cannot be indexed [k]
    check_compile_export_emit(model, tuple(torch.randn(s) for s in shapes), tmp_path)


@pytest.mark.parametrize("block", ["f", "none", "learnedPositionalEncoding", "multiHeadAttention"])
def test_block_names_cannot_shadow_what_the_emitted_file_uses(block: str, tmp_path: Path) -> None:
    spec = f"""
archcomp: 1
name: t
inputs: {{x: [B, S, 8]}}
blocks:
  {block}:
    inputs: [x]
    nodes:
      - {{id: p, op: learned_positional_encoding, max_len: 16}}
      - {{id: a, op: multi_head_attention, num_heads: 2}}
    outputs: a
nodes:
  - {{id: g, op: {block}, repeat: 2}}
outputs: g
"""
    model = archcomp.build(spec, seed=0)
    check_compile_export_emit(model, (torch.randn(2, 3, 8),), tmp_path)


def test_a_node_between_a_copys_nodes_keeps_the_copy_inline(monkeypatch) -> None:
    """p runs between f.1's nodes; one call for f.1 would move p's dropout draws after it."""
    spec = """
archcomp: 1
name: t
inputs: {x: [B, 8]}
blocks:
  ff:
    inputs: [x]
    nodes:
      - {id: a, op: linear, out_features: 8}
      - {id: inner, op: relu}
      - {id: d, op: dropout, p: 0.5, in: a}
      - {id: s, op: add, in: [d, inner]}
    outputs: {y: s, mid: inner}
nodes:
  - {id: p, op: dropout, p: 0.5, in: f.mid}
  - {id: f, op: ff, repeat: 2, in: x}
  - {id: out, op: add, in: [f, p]}
outputs: out
"""
    model, inline = _pair(monkeypatch, spec)
    assert isinstance(model.f[0], CompiledBlock) and not isinstance(model.f[1], CompiledBlock)
    x = torch.randn(4, 8)
    model.train()
    inline.train()
    torch.manual_seed(1)
    got = model(x)
    torch.manual_seed(1)
    assert_same(got, inline(x))


NUMBERED = """
archcomp: 1
name: numbered
inputs:
  x: {shape: [2, 3, 8, 8]}
blocks:
  sequential:
    inputs: [x]
    nodes:
      - {id: '0', op: conv2d, out_channels: 4, kernel_size: 3}
      - {id: '1', op: relu}
      - {id: '2', op: conv2d, out_channels: 5, kernel_size: 3, in: '1'}
    outputs: '2'
nodes:
  - {id: body, op: sequential}
  - {id: '0', op: flatten}
  - {id: head, op: linear, out_features: 3}
outputs: {out: head}
"""


def test_numbered_node_ids_are_an_nn_sequential_s_keys(tmp_path: Path) -> None:
    """Node ids ``0``, ``1``, ... (an imported nn.Sequential's children): the keys are
    ``body.0.weight`` as torch's, and --emit-python's source registers them by name."""
    from archcomp.backends.torch.emit import emit_python

    model = archcomp.build(NUMBERED, seed=0)
    assert list(model.state_dict()) == [
        "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias", "head.weight", "head.bias"
    ]  # fmt: skip
    source = emit_python(model)
    assert "self.add_module('0', item0)" in source
    scope: dict[str, Any] = {}
    exec(compile(source, str(tmp_path / "numbered.py"), "exec"), scope)  # archcomp's own source
    emitted = scope["Numbered"]()
    emitted.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(emitted(x), model(x))
