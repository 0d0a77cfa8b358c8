"""Every block instance becomes a module of a generated class, whose forward its parent calls.

A hand-written model defines ``class Block(nn.Module)`` once and builds it N times, and calls
``self.mlp(x)`` for a block it uses once; the compiler does the same. Each block instance (a
copy of a ``repeat``, or a block used once) is an instance of a
:class:`~archcomp.backends.torch.module.CompiledBlock` subclass named after its block, and
instances with the same structure (ops, arguments, wiring, shapes) share one class. Its forward
is generated once, however large N is; the model's forward calls ``self.h_[0](x)``,
``self.h_[1](h__0)``, ..., and ``GptBlock.forward`` calls ``self.mlp(ln_2)``: blocks nest.
A repeated op (``repeat`` on an op, not a block) is already one module call and stays one.

:func:`plan_blocks` decides which instances qualify. An instance is compiled inline, node by
node in its parent's forward, when one call could not run exactly what inline code runs: it
reads a tensor computed after it starts, another node runs between its nodes (which would also
move that node's dropout draws), it shares weights with a node outside it, or nothing outside
reads it. The sub-blocks of an inlined instance are tried in its parent's forward instead. The
weights, their state-dict keys, the order of the ops (and so of dropout's random draws) and the
outputs are those of inline compilation, which the tests check.
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
class Level:
    """The block copies compiled as calls in one forward (the model's or a block class's)."""

    first: dict[str, Instance] = field(default_factory=dict)  # first node's name -> its copy
    covered: set[str] = field(default_factory=set)  # every node inside a planned copy


@dataclass
class Instance:
    """One block instance (a copy of a repeat, or a block used once), compiled as one call."""

    scope: Scope
    nodes: list[Node]
    ext: list[Ref]  # tensors read from outside the copy, in the order of its forward's params
    params: list[str]  # the forward's parameter names (the block's input names)
    exports: list[Ref]  # results read outside the copy (later nodes or outputs), in node order
    export_names: list[str]  # the block's output names for them (``y``, ``mid``)
    key: tuple[Any, ...]  # the structure: copies with equal keys share a class
    shares: str | None = None  # the copy whose modules this one calls (``shared: true``)
    cls: BlockClass | None = None
    inner: Level = field(default_factory=Level)  # its sub-blocks, called from its forward

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
class BlockPlan(Level):
    """The model's level, and every class generated."""

    classes: list[BlockClass] = field(default_factory=list)


@dataclass
class _Planner:
    g: Graph
    pos: dict[str, int]
    exports: dict[str, dict[Ref, None]]
    used: set[str]
    plan: BlockPlan
    by_block: dict[str, list[BlockClass]] = field(default_factory=dict)
    planned: dict[str, Instance] = field(default_factory=dict)

    def level(self, nodes: list[Node], depth: int) -> Level:
        """Plan the scopes at ``depth`` among ``nodes``; an inlined scope's sub-scopes are
        tried at the same level (their calls go where its nodes would have gone)."""
        out = Level()
        groups: dict[str, list[Node]] = {}
        for node in nodes:
            if len(node.scopes) > depth:
                groups.setdefault(node.scopes[depth].name, []).append(node)
        for members in groups.values():
            scope = members[0].scopes[depth]
            if len(members) == 1 and members[0].name == scope.name:
                continue  # a repeated op: its module is already one call
            inst = self.instance(scope, members, depth)
            if inst is None:
                sub = self.level(members, depth + 1)
                out.first.update(sub.first)
                out.covered |= sub.covered
                continue
            out.first[members[0].name] = inst
            out.covered.update(n.name for n in members)
            assert inst.cls is not None
            if inst.shares is not None:
                continue  # a sharing copy calls its target: nothing of its own
            if inst.cls.template is inst:
                inst.inner = self.level(members, depth + 1)
            else:  # the same structure as its class's first instance: the same sub-blocks
                inst.inner = _mirror(inst.cls.template, inst)
        return out

    def instance(self, scope: Scope, nodes: list[Node], depth: int) -> Instance | None:
        exports = sorted(self.exports.get(scope.name, {}), key=_order(self.pos))
        inst = _instance(self.g, scope, nodes, depth, self.pos, exports)
        if inst is None:
            return None
        if inst.shares is not None:
            target = self.planned.get(inst.shares)
            if target is None or target.key != inst.key or target.cls is None:
                return None
            inst.cls = target.cls
        else:
            classes = self.by_block.setdefault(inst.scope.block, [])
            cls = next((c for c in classes if c.template.key == inst.key), None)
            if cls is None:
                cls = BlockClass(_unique(class_name(inst.scope.block, "Block"), self.used), inst)
                classes.append(cls)
                self.plan.classes.append(cls)
            inst.cls = cls
        inst.cls.instances.append(inst)
        self.planned[scope.name] = inst
        return inst


def _mirror(template: Instance, copy: Instance) -> Level:
    """``template``'s sub-blocks at ``copy``'s names. Only the first instance of a class is
    traced; a further one needs its sub-blocks' classes and nodes (to build their modules),
    not their wiring, so the planning of the first instance is reused, not redone."""
    out = Level()
    by_name = {n.name: n for n in copy.nodes}
    tp, cp = template.prefix, copy.prefix
    for sub in template.inner.first.values():
        nodes = [by_name[cp + n.name[len(tp) :]] for n in sub.nodes]
        name = cp + sub.scope.name[len(tp) :]
        scope = next(s for s in nodes[0].scopes if s.name == name)
        shares = None if sub.shares is None else cp + sub.shares[len(tp) :]
        mirrored = Instance(scope, nodes, [], [], [], [], sub.key, shares, sub.cls)
        if shares is None:
            mirrored.inner = _mirror(sub, mirrored)
        out.first[nodes[0].name] = mirrored
        out.covered.update(n.name for n in nodes)
    return out


def plan_blocks(g: Graph, taken: Iterable[str] = ()) -> BlockPlan:
    """Which block instances compile to calls of generated classes, and which classes exist."""
    inside: dict[str, set[str]] = {}  # scope -> the nodes in it
    for node in g.nodes.values():
        for s in node.scopes:
            inside.setdefault(s.name, set()).add(node.name)
    plan = BlockPlan()
    if not inside:
        return plan
    scopes_of = {n.name: [s.name for s in n.scopes] for n in g.nodes.values()}
    exports: dict[str, dict[Ref, None]] = {}

    def read(r: Ref, reader: str | None) -> None:
        for s in scopes_of.get(r.node, ()):
            if reader is None or reader not in inside[s]:
                exports.setdefault(s, {})[r] = None

    for node in g.nodes.values():
        for r in node.refs():
            read(r, node.name)
    for r in g.outputs.values():
        read(r, None)
    pos = {name: i for i, name in enumerate(g.nodes)}
    planner = _Planner(g, pos, exports, set(taken), plan)
    top = planner.level(list(g.nodes.values()), 0)
    plan.first, plan.covered = top.first, top.covered
    return plan


def _instance(
    g: Graph, scope: Scope, nodes: list[Node], depth: int, pos: dict[str, int], exports: list[Ref]
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
        deeper = node.scopes[depth + 1 :]  # its sub-blocks: the calls the class's forward makes
        subs = tuple((s.name[len(prefix) :], s.block, s.repeat, s.shared) for s in deeper)
        body.append((rel, node.op.name, node.args, wiring, outputs, shared, subs))
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
