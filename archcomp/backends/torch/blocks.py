"""Repeated blocks become classes: one generated forward per distinct structure, N instances.

A hand-written model defines ``class Block(nn.Module)`` once and builds it N times; the compiler
does the same. Each copy of a repeated block (a ``repeat`` scope holding two or more nodes) is an
instance of a :class:`~archcomp.backends.torch.module.CompiledBlock` subclass, and copies with the
same structure (ops, arguments, wiring, shapes) share one class. Its forward is generated once,
however large N is, and the model's forward calls ``self.h_[0](x)``, ``self.h_[1](h__0)``, ...

:func:`plan_blocks` decides which copies qualify. A copy is compiled inline, node by node in the
model's forward, when one call could not run exactly what inline code runs: it reads a tensor
computed after it starts, another node runs between its nodes, it shares weights with a node
outside it, or nothing outside reads it. The weights, the order of the ops (and so of dropout's
random draws) and the outputs are those of inline compilation, which the tests check.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from archcomp.backends.torch.module import class_name
from archcomp.frontend.schema import FORWARD_GLOBALS
from archcomp.ir import Graph, Node, Ref, Scope


@dataclass
class Instance:
    """One copy of a repeated block, compiled as one call."""

    scope: Scope
    nodes: list[Node]
    ext: list[Ref]  # tensors read from outside the copy, in the order of its forward's params
    params: list[str]  # the forward's parameter names (the block's input names)
    exports: list[Ref]  # results read outside the copy (later nodes or outputs), in node order
    export_names: list[str]  # the block's output names for them (``y``, ``mid``)
    key: tuple[Any, ...]  # the structure: copies with equal keys share a class
    shares: str | None = None  # the copy whose modules this one calls (``shared: true``)
    cls: BlockClass | None = None

    @property
    def prefix(self) -> str:
        return self.scope.name + "."


@dataclass
class BlockClass:
    """A generated class: its name and the copy whose lowering writes its forward."""

    name: str
    template: Instance
    instances: list[Instance] = field(default_factory=list)


@dataclass
class BlockPlan:
    first: dict[str, Instance] = field(default_factory=dict)  # first node's name -> its copy
    covered: set[str] = field(default_factory=set)  # every node inside a planned copy
    classes: list[BlockClass] = field(default_factory=list)


def plan_blocks(g: Graph, taken: Iterable[str] = ()) -> BlockPlan:
    """Which copies of repeated blocks compile to class instances, and which classes exist."""
    groups: dict[str, list[Node]] = {}
    scope_of: dict[str, str] = {}  # node -> the repeat copy it belongs to
    scopes: dict[str, Scope] = {}
    for node in g.nodes.values():
        s = next((s for s in node.scopes if s.repeat is not None), None)
        if s is not None:
            groups.setdefault(s.name, []).append(node)
            scope_of[node.name] = s.name
            scopes[s.name] = s
    if not groups:
        return BlockPlan()
    pos = {name: i for i, name in enumerate(g.nodes)}
    exports: dict[str, dict[Ref, None]] = {s: {} for s in groups}
    for node in g.nodes.values():
        mine = scope_of.get(node.name)
        for r in node.refs():
            theirs = scope_of.get(r.node)
            if theirs is not None and theirs != mine:
                exports[theirs][r] = None
    for r in g.outputs.values():
        theirs = scope_of.get(r.node)
        if theirs is not None:
            exports[theirs][r] = None

    plan = BlockPlan()
    used = set(taken)
    by_block: dict[str, list[BlockClass]] = {}
    planned: dict[str, Instance] = {}
    for sname, nodes in groups.items():
        if len(nodes) < 2:
            continue  # a repeated op: its module is already one call
        inst = _instance(g, scopes[sname], nodes, pos, sorted(exports[sname], key=_order(pos)))
        if inst is None:
            continue
        if inst.shares is not None:
            target = planned.get(inst.shares)
            if target is None or target.key != inst.key or target.cls is None:
                continue
            inst.cls = target.cls
        else:
            classes = by_block.setdefault(inst.scope.block, [])
            cls = next((c for c in classes if c.template.key == inst.key), None)
            if cls is None:
                cls = BlockClass(_unique(class_name(inst.scope.block, "Block"), used), inst)
                classes.append(cls)
                plan.classes.append(cls)
            inst.cls = cls
        inst.cls.instances.append(inst)
        planned[sname] = inst
        plan.first[nodes[0].name] = inst
        plan.covered.update(n.name for n in nodes)
    return plan


def _instance(
    g: Graph, scope: Scope, nodes: list[Node], pos: dict[str, int], exports: list[Ref]
) -> Instance | None:
    if not exports:
        return None  # nothing reads it: left to the checks that say so
    prefix = scope.name + "."
    inside = {n.name for n in nodes}
    start = pos[nodes[0].name]
    if pos[nodes[-1].name] - start + 1 != len(nodes):
        return None  # another node runs between the copy's nodes: one call would reorder them
    ext: list[Ref] = []
    where: dict[Ref, int] = {}
    for node in nodes:
        for r in node.refs():
            if r.node in inside or r in where:
                continue
            if r.node not in g.inputs and pos.get(r.node, start) >= start:
                return None  # computed after the copy begins: it cannot be one call
            where[r] = len(ext)
            ext.append(r)
    shares: set[str] = set()
    body: list[tuple[Any, ...]] = []
    for node in nodes:
        rel = node.name[len(prefix) :]
        shared = None
        if node.shared_with is not None:
            if node.shared_with.startswith(prefix):
                shared = node.shared_with[len(prefix) :]
            elif node.shared_with.endswith("." + rel):
                shares.add(node.shared_with[: -len(rel) - 1])
            else:
                return None
        wiring = tuple(
            (port, tuple(_wire(r, prefix, inside, where) for r in refs))
            if isinstance(refs, list)
            else (port, _wire(refs, prefix, inside, where))
            for port, refs in node.inputs.items()
        )
        outputs = tuple(sorted(node.outputs.items()))
        body.append((rel, node.op.name, node.args, wiring, outputs, shared))
    if len(shares) > 1 or (shares and any(n.shared_with is None for n in nodes)):
        return None  # partly shared with another copy: compiled inline
    params = _param_names(ext, g.scope_inputs.get(scope.name, {}))
    ext_types = tuple(g.type_of(r) for r in ext)
    rel_exports = tuple((r.node[len(prefix) :], r.result) for r in exports)
    named = g.scope_outputs.get(scope.name, {})  # the block's output names
    names = [next((o for o, t in named.items() if t == r), r.node[len(prefix) :]) for r in exports]
    key = (scope.block, tuple(body), ext_types, tuple(params), rel_exports, tuple(names))
    return Instance(scope, nodes, ext, params, exports, names, key, next(iter(shares), None))


def _wire(r: Ref, prefix: str, inside: set[str], where: dict[Ref, int]) -> tuple[Any, ...]:
    if r.node in inside:
        return ("node", r.node[len(prefix) :], r.result)
    return ("param", where[r])


def _order(pos: dict[str, int]) -> Any:
    return lambda r: (pos[r.node], r.result or "")


def _param_names(ext: list[Ref], bindings: dict[str, Ref]) -> list[str]:
    """The block's input names for the tensors it reads (``x``, ``memory``); ``in_k`` else."""
    names: list[str] = []
    for k, r in enumerate(ext):
        name = next((n for n, b in bindings.items() if b == r and n not in names), f"in_{k}")
        if keyword.iskeyword(name) or name in FORWARD_GLOBALS or name == "self":
            name += "_"  # would shadow what the generated forward uses
        while name in names:
            name += "_"
        names.append(name)
    return names


def _unique(name: str, used: set[str]) -> str:
    out, k = name, 2
    while out in used:
        out, k = f"{name}{k}", k + 1
    used.add(out)
    return out
