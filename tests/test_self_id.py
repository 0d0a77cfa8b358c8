"""``self`` as a node id: transformers keeps BERT's attention at ``attention.self``, so a spec
must be able to name a node so. The code generator keeps ``self`` for the forward's first
argument and names the node's local ``self_1``; the node's module and keys stay ``self``."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from equivalence import Case, check_case
from torch import nn

import archcomp
from archcomp.backends.torch.emit import emit_python
from archcomp.frontend.schema import reserved_id

SPEC = """
archcomp: 1
name: selfish
inputs: {x: {shape: [B, 5, 8]}}
dims: {B: 2}
blocks:
  attention:
    inputs: [x]
    nodes:
      - {id: self, op: linear, out_features: 8}
      - {id: act, op: relu}
      - {id: output, op: linear, out_features: 8}
      - {id: add, op: add, in: [x, output]}
    outputs: add
nodes:
  - {id: self, op: linear, out_features: 8}
  - {id: attention, op: attention}
  - {id: layers, op: attention, repeat: 2}
  - {id: head, op: linear, in: [self], out_features: 8}
  - {id: out, op: add, in: [layers, head]}
outputs: {out: out, first: self}
"""


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self = nn.Linear(8, 8)
        self.output = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.output(torch.relu(self.self(x)))


class Selfish(nn.Module):
    """The spec by hand: a child called ``self`` at the top and in each block."""

    def __init__(self) -> None:
        super().__init__()
        self.self = nn.Linear(8, 8)
        self.attention = Attention()
        self.layers = nn.ModuleList(Attention() for _ in range(2))
        self.head = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s = self.self(x)
        h = self.attention(s)
        for layer in self.layers:
            h = layer(h)
        return [h + self.head(s), s]


def test_self_is_a_node_id_with_its_own_keys() -> None:
    model = archcomp.build(SPEC, seed=0)
    ref = Selfish()
    keys = list(model.state_dict())
    assert keys == list(ref.state_dict())
    assert "attention.self.weight" in keys and "layers.1.self.bias" in keys
    assert keys[0] == "self.weight"
    assert isinstance(model.get_submodule("layers.0.self"), nn.Linear)
    ref.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    case = Case(
        model,
        ref,
        (x,),
        lambda x: ref(x),
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)


def test_the_forward_names_no_local_self() -> None:
    """``self`` stays the module in every generated forward, the model's, each block class's
    and the emitted source's: the node's value is the local ``self_1``."""
    model = archcomp.build(SPEC, seed=0)
    block = model.get_submodule("attention")
    for code in (model.code, block.code, emit_python(model)):
        assert "self_1 = self.self(x)" in code
        assert "\n    self = " not in code and "\n        self = " not in code
    ns: dict[str, object] = {}
    exec(compile(emit_python(model), "<emitted>", "exec"), ns)  # it runs as written
    x = torch.randn(2, 5, 8)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):  # re-generated
        torch.testing.assert_close(other(x)["out"], model(x)["out"])


@pytest.mark.parametrize(
    ("nid", "why"),
    [
        ("forward", "'forward' is a reserved name"),
        ("_x", "ids starting with '_'"),
        ("class", "'class' is a reserved name"),
    ],
)
def test_other_reserved_ids_are_still_refused_where_written(nid: str, why: str) -> None:
    text = f"""archcomp: 1
name: t
inputs: {{x: {{shape: [2, 8]}}}}
nodes:
  - {{id: {nid}, op: linear, out_features: 4}}
outputs: {{y: {nid}}}
"""
    with pytest.raises(archcomp.SpecError) as e:
        archcomp.build(text)
    assert why in str(e.value)
    assert "<string>:5:" in str(e.value)  # the id's line


def test_self_is_still_no_input() -> None:
    text = """archcomp: 1
name: t
inputs: {self: {shape: [2, 8]}}
nodes:
  - {id: fc, op: linear, in: self, out_features: 4}
outputs: {y: fc}
"""
    with pytest.raises(
        archcomp.SpecError, match="'self' is a reserved name and cannot be an input"
    ):
        archcomp.build(text)


def test_import_module_keeps_a_child_called_self() -> None:
    """torch.fx's import of the hand-written module: its ``self`` children are nodes ``self``,
    so its own state_dict loads strictly and the outputs are equal."""
    net = Selfish().eval()
    text = archcomp.import_module(net, (torch.randn(2, 5, 8),), dims={"B": 0})
    assert "  - {id: self, op: linear, out_features: 8}" in text
    assert "      - {id: self, op: linear, out_features: 8}" in text  # in the block
    model = archcomp.build(text).eval()
    model.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(2))
    got, want = model(x), net(x)
    for g, w in zip(got.values(), want, strict=True):
        torch.testing.assert_close(g, w)


def _ours(module: nn.Module, name: str) -> bool:
    """Whether torch or archcomp gives ``module`` the attribute (transformers, once imported,
    adds ``nn.Module.smart_apply``; a model built without it has no such name)."""
    where = getattr(getattr(type(module), name, None), "__module__", None) or "torch"
    return where.startswith(("torch", "archcomp"))


def test_every_attribute_of_a_built_module_is_reserved_as_a_node_id() -> None:
    """A node id is an attribute of the compiled module (or of its block's): every public name
    the built modules carry beyond their nodes (nn.Module's, GraphModule's, ArchModule's own,
    such as ``generate`` and ``source``) is refused as an id, where it is written, and never
    reaches torch (``source`` was a TypeError from torch, exit 3; ``generate`` a forward that
    called the method)."""
    model = archcomp.build(SPEC, seed=0)
    nodes = {"self", "attention", "layers", "head", "out", "act", "output", "add"}
    for module in (model, model.get_submodule("attention")):
        names = {n for n in dir(module) if not n.startswith("_") and _ours(module, n)} - nodes
        free = sorted(n for n in names if not reserved_id(n))
        assert free == [], f"{type(module).__name__} attributes a node id may take: {free}"
    for nid in ("generate", "source", "node_modules"):
        text = f"""archcomp: 1
name: t
inputs: {{x: {{shape: [2, 8]}}}}
nodes:
  - {{id: {nid}, op: linear, out_features: 4}}
outputs: {{y: {nid}}}
"""
        with pytest.raises(archcomp.SpecError) as e:
            archcomp.build(text)
        assert f"<string>:5:10: error: '{nid}' is a reserved name and cannot be a node id" in str(
            e.value
        )


TIED_INTO_CALLS = """
archcomp: 1
name: t
inputs: {x: {shape: [B, 8]}}
blocks:
  blk:
    inputs: [h]
    nodes:
      - {id: self, op: parameter, shape: [8], key: self}
      - {id: '0', op: linear, out_features: 8, in: h}
      - {id: '1', op: add, in: ['0', self]}
    outputs: '1'
nodes:
  - {id: a, op: blk}
  - {id: layers, op: blk, repeat: 2}
  - {id: head, op: linear, out_features: 8, tie: {bias: layers.1.self, weight: a.0}}
  - {id: out, op: linear, out_features: 8, tie: {bias: a.self}}
outputs: {y: out}
"""


def test_a_tie_path_goes_through_calls_to_the_node_it_names() -> None:
    """A tie's path walks block calls and repeat copies one name at a time: ``layers.1.self``
    is copy 1's ``key: self`` tensor (it was read as parameter 'self' of the call 'layers.1'
    and refused), ``a.0`` node 0 of ``a``, its same-named parameter (it was read as parameter
    '0' of the call 'a' and reached torch as a module: exit 3), ``a.self`` the call's tensor."""
    model = archcomp.build(TIED_INTO_CALLS, seed=0)
    p = model.get_parameter
    assert model.get_submodule("head").bias is p("layers.1.self")
    assert model.get_submodule("head").weight is p("a.0.weight")
    assert model.get_submodule("out").bias is p("a.self")
    assert p("layers.0.self") is not p("layers.1.self")
    x = torch.randn(2, 8)
    ns: dict[str, object] = {}
    exec(compile(emit_python(model), "<emitted>", "exec"), ns)
    emitted = ns["T"]()  # type: ignore[operator]
    missing, unexpected = emitted.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and set(missing) <= set(ns["TIED"])  # type: ignore[arg-type]
    torch.testing.assert_close(emitted(x), model(x))


NUMBERED = """
archcomp: 1
name: t
inputs: {x: {shape: [B, 8]}}
blocks:
  blk:
    inputs: [h, self_1]
    nodes:
      - {id: self, op: parameter, shape: [8], key: self}
      - {id: '0', op: linear, out_features: 8, in: h}
      - {id: '1', op: add, in: ['0', self, self_1]}
    outputs: '1'
nodes:
  - {id: '0', op: parameter, shape: [8], key: self}
  - {id: '00', op: buffer, shape: [8], key: self}
  - {id: self, op: linear, out_features: 8, in: x, tie: {bias: '0'}}
  - {id: '1', op: blk, in: [self, x], tie: {self: '0'}}
  - {id: layers, op: blk, in: ['1', '00'], repeat: 2, tie: {0.weight: '1.0.weight'}}
  - {id: head, op: linear, out_features: 8, tie: {bias: layers.1.self, weight: '1.0'}}
outputs: {y: head}
"""


def test_numbered_and_self_keyed_tensors_tie_and_emit() -> None:
    """Numbered nodes are tie targets ('0', '1.0.weight'; they were refused by the pattern),
    a block call ties its ``key: self`` node by its bare id (``tie: {self: '0'}``; it was
    refused: "'self' names none"), and --emit-python writes a numbered ``key: self``
    parameter with register_parameter (``self.0 = ...`` was a SyntaxError, exit 3)."""
    model = archcomp.build(NUMBERED, seed=0)
    p = model.get_parameter
    assert p("self.bias") is p("0") and p("1.self") is p("0")
    assert p("layers.0.0.weight") is p("1.0.weight") is p("layers.1.0.weight")
    assert p("head.bias") is p("layers.1.self") and p("head.weight") is p("1.0.weight")
    assert p("layers.0.self") is not p("0")
    source = emit_python(model)
    assert "self.register_parameter('0', nn.Parameter(torch.empty((8,))))" in source
    ns: dict[str, object] = {}
    exec(compile(source, "<emitted>", "exec"), ns)
    emitted = ns["T"]()  # type: ignore[operator]
    missing, unexpected = emitted.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and set(missing) <= set(ns["TIED"])  # type: ignore[arg-type]
    assert emitted.get_parameter("1.self") is emitted.get_parameter("0")
    x = torch.randn(2, 8)
    torch.testing.assert_close(emitted(x), model(x))
