"""Every block instance is a module of a generated class, whose forward its parent calls.

The references are independent of the code generator: the block instances are the graph's
scopes, the state-dict keys are the nodes' declared weight names, and the values (outputs and
gradients) are those of the same spec compiled inline, every node in the model's forward.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from numerics import assert_same
from spec_library import LIBRARY, SIZES, example_inputs
from torch import nn

import archcomp
from archcomp.backends.torch import codegen
from archcomp.backends.torch.blocks import BlockPlan
from archcomp.backends.torch.module import CompiledBlock, class_name
from archcomp.ir import Graph
from archcomp.ir.dims import substitute

HIERARCHY = ["gpt2", "transformer", "bert_base", "llama", "vit_b16", "resnet18"]
# Tables recomputed at construction, documented as non-persistent buffers (archcomp/nn/):
# sinusoidal positions, rotary cos/sin. Every other declared weight is in the state dict.
RECOMPUTED = (".pe", ".rotary.cos", ".rotary.sin", ".relative_position_index", ".shift_mask.mask")


def _block_scopes(g: Graph) -> dict[str, str]:
    """Scope name -> block name, for every block instance (a repeated op is not a block)."""
    out: dict[str, str] = {}
    for node in g.nodes.values():
        for s in node.scopes:
            if s.name not in g.nodes:
                out.setdefault(s.name, s.block)
    return out


def _inline_build(monkeypatch: pytest.MonkeyPatch, name: str, params: Any) -> nn.Module:
    with monkeypatch.context() as m:
        m.setattr(codegen, "plan_blocks", lambda g, taken=(): BlockPlan())
        return archcomp.build(name, params, seed=3)


def _setup(name: str) -> tuple[Graph, nn.Module, tuple[torch.Tensor, ...]]:
    params = LIBRARY[name][1]
    g = archcomp.check(name, params)
    model = archcomp.build(name, params, seed=3)
    inputs = tuple(example_inputs(g, torch.Generator().manual_seed(0)).values())
    return g, model, inputs


def _count_calls(model: nn.Module, names: list[str]) -> Counter[str]:
    calls: Counter[str] = Counter()
    modules = dict(model.named_modules())
    for n in names:
        modules[n].register_forward_hook(lambda mod, args, out, n=n: calls.update([n]))
    return calls


@pytest.mark.parametrize("name", HIERARCHY)
def test_every_block_instance_is_a_module_that_runs_once_per_forward(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    g, model, inputs = _setup(name)
    scopes = _block_scopes(g)
    assert scopes, f"{name} has no blocks"
    modules = dict(model.named_modules())
    for scope, block in scopes.items():
        m = modules[scope]
        assert isinstance(m, CompiledBlock), scope
        assert type(m).__name__.startswith(class_name(block, "Block")), (scope, block)
        assert f"{type(m).__name__}(" in repr(model)  # ModuleList folds equal copies
    calls = _count_calls(model, list(scopes))
    model.eval()
    with torch.no_grad():
        model(*inputs)
    assert calls == Counter(list(scopes))  # each block exactly once
    model(*inputs)
    assert calls == Counter({s: 2 for s in scopes})
    # the check can fail: in the inline compilation, no block's forward ever runs
    inline = _inline_build(monkeypatch, name, LIBRARY[name][1])
    missed = _count_calls(inline, list(scopes))
    with torch.no_grad():
        inline(*inputs)
    assert not missed


def _float_outputs(out: Any) -> list[torch.Tensor]:
    values = list(out.values()) if isinstance(out, dict) else [out]
    return [v for v in values if v.is_floating_point()]


@pytest.mark.parametrize("name", HIERARCHY)
def test_outputs_and_gradients_equal_the_inline_compilation(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    _, model, inputs = _setup(name)
    inline = _inline_build(monkeypatch, name, LIBRARY[name][1])
    sa, sb = model.state_dict(), inline.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert_same(sa[k], sb[k], msg=k)
    results = []
    for m in (model, inline):
        m.train()  # batch norm's batch statistics; the small specs' dropout is 0
        torch.manual_seed(5)
        outs = _float_outputs(m(*inputs))
        sum(o.float().square().mean() for o in outs).backward()  # type: ignore[union-attr]
        grads = {k: p.grad for k, p in m.named_parameters() if p.grad is not None}
        results.append((outs, grads))
    (outs_a, grads_a), (outs_b, grads_b) = results
    for a, b in zip(outs_a, outs_b, strict=True):
        assert_same(a, b)
    assert list(grads_a) == list(grads_b) and grads_a
    for k in grads_a:
        assert_same(grads_a[k], grads_b[k], msg=k)


def _expected_keys(g: Graph) -> list[str]:
    """The nodes' declared weights under their node names, in the order of a module tree
    built node by node (a container's keys together, where its first node put it)."""
    tree: dict[str, Any] = {}
    for node in g.nodes.values():
        if node.shared_with is not None:
            continue  # calls another node's modules: no keys of its own
        names = [*node.op.param_shapes(node.args), *node.op.buffer_shapes(node.args)]
        leaf = tree
        for part in node.name.split("."):
            leaf = leaf.setdefault(part, {})
        leaf[""] = [n for n in names if not f"{node.name}.{n}".endswith(RECOMPUTED)]
    out: list[str] = []

    def walk(t: dict[str, Any], path: str) -> None:
        for k, v in t.items():
            if k == "":
                out.extend(f"{path}.{n}" for n in v)
            else:
                walk(v, f"{path}.{k}" if path else k)

    walk(tree, "")
    return out


def _owner(key: str, nodes: list[str]) -> str:
    return max((n for n in nodes if key.startswith(n + ".")), key=len)


@pytest.mark.parametrize("name", sorted(LIBRARY))
@pytest.mark.parametrize("size", ["small", "default"])
def test_state_dict_keys_are_the_nodes_weight_names(name: str, size: str) -> None:
    params = LIBRARY[name][1] if size == "small" else {}
    g = archcomp.check(name, params)
    model = archcomp.build(name, params, device="meta")
    got, want = list(model.state_dict()), _expected_keys(g)
    assert sorted(got) == sorted(want)
    # node by node in the same order (within one node, its module's own order)
    nodes = [n for n in g.nodes if g.nodes[n].shared_with is None]
    owners = [_owner(k, nodes) for k in got]
    assert list(dict.fromkeys(owners)) == list(dict.fromkeys(_owner(k, nodes) for k in want))


def test_print_shows_single_use_blocks_as_their_classes() -> None:
    model = archcomp.build("gpt2", LIBRARY["gpt2"][1])
    text = repr(model)
    assert "(mlp): Mlp(" in text and "(0-1): 2 x GptBlock(" in text
    assert "Module(" not in text.replace("ModuleList(", "")  # no plain containers left
    t = archcomp.build("transformer", LIBRARY["transformer"][1])
    assert "(encoder): Encoder(" in repr(t) and "(decoder): Decoder(" in repr(t)
    assert "encoder_1 = self.encoder(" in t.code or "encoder = self.encoder(" in t.code


def test_torchinfo_lists_every_block_with_its_shape_and_parameters() -> None:
    torchinfo = pytest.importorskip("torchinfo")
    g, model, inputs = _setup("transformer")
    scopes = _block_scopes(g)
    stats = torchinfo.summary(model, input_data=list(inputs), depth=10, verbose=0)
    modules = dict(model.named_modules())
    rows = {id(r.module): r for r in stats.summary_list}
    for scope in scopes:
        m = modules[scope]
        row = rows[id(m)]
        assert row.class_name == type(m).__name__
        assert row.output_size == _scope_shape(g, scope), scope
        assert row.num_params == sum(p.numel() for p in m.parameters()) > 0, scope


def _scope_shape(g: Graph, scope: str) -> list[int]:
    """The block's output shape at the example sizes, from the checked graph."""
    (ref,) = g.scope_outputs[scope].values()
    t = g.type_of(ref)
    assert t is not None
    return [int(substitute(d, SIZES)) for d in t.shape]  # type: ignore[call-overload]


def test_torchview_draws_the_block_levels() -> None:
    torchview = pytest.importorskip("torchview")
    _, model, inputs = _setup("transformer")
    graph = torchview.draw_graph(model, input_data=list(inputs), depth=3, expand_nested=True)
    source = graph.visual_graph.source
    for cls in ("Encoder", "EncoderLayer", "Decoder", "DecoderLayer"):
        assert f"label={cls} " in source, cls


INLINE = {
    # p runs between the block's nodes (it reads b.mid): one call would move p's dropout draws
    "a_parent_node_between_its_nodes": """
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
  - {id: f, op: ff, in: x}
  - {id: out, op: add, in: [f, p]}
outputs: out
""",
    # the block reads q, computed after it starts
    "an_input_computed_after_it_starts": """
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
  - {id: f, op: mix, in: {x: x, y: q}}
  - {id: q, op: sigmoid, in: x}
outputs: f
""",
}


@pytest.mark.parametrize("case", sorted(INLINE))
def test_a_single_use_block_that_cannot_be_one_call_stays_inline(
    monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    spec = INLINE[case]
    model = archcomp.build(spec, seed=0)
    f = dict(model.named_modules()).get("f")  # a plain container, or none: no weights
    assert f is None or type(f) is nn.Module
    assert "self.f(" not in model.code  # its nodes are inline
    assert not any(isinstance(m, CompiledBlock) for m in model.modules())
    with monkeypatch.context() as m:
        m.setattr(codegen, "plan_blocks", lambda g, taken=(): BlockPlan())
        inline = archcomp.build(spec, seed=0)
    x = torch.randn(4, 8)
    model.train()
    inline.train()
    torch.manual_seed(1)
    got = model(x)
    torch.manual_seed(1)
    assert_same(got, inline(x))


def test_the_sub_blocks_of_an_inline_block_are_calls_in_its_parent() -> None:
    """The outer block reads q, computed after it starts; its inner block does not."""
    spec = """
archcomp: 1
name: t
inputs: {x: [B, 8]}
blocks:
  lin:
    inputs: [x]
    nodes:
      - {id: l, op: linear, out_features: 8}
      - {id: r, op: relu}
    outputs: r
  outer:
    inputs: [x, y]
    nodes:
      - {id: inner, op: lin, in: x}
      - {id: b, op: add, in: [inner, y]}
    outputs: b
nodes:
  - {id: f, op: outer, in: {x: x, y: q}}
  - {id: q, op: sigmoid, in: x}
outputs: f
"""
    model = archcomp.build(spec, seed=0)
    assert type(model.get_submodule("f")) is nn.Module
    inner = model.get_submodule("f.inner")
    assert type(inner).__name__ == "Lin" and "f_inner = self.f.inner(x)" in model.code
    x = torch.randn(4, 8)
    with torch.no_grad():
        want = torch.relu(inner.l(x)) + torch.sigmoid(x)  # by hand, with the same weights
        assert_same(model(x), want)
