"""Front end, part 2: a parsed :class:`Program` -> flat IR nodes.

Blocks are inlined with qualified names (``encoder.layers.0.attn``); ``repeat: N`` stacks N
copies in sequence (the first input of copy k+1 is the first output of copy k); expressions are
evaluated against the params in scope; op arguments are validated by each op's model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.base.errors import Reporter, did_you_mean, listing
from archcomp.frontend.expr import ExprError, as_text, is_expression, show, substitute
from archcomp.frontend.loader import BlockDef, Program
from archcomp.frontend.params import ParamProblem, check_names, resolve
from archcomp.frontend.schema import NodeSpec, reserved_id
from archcomp.frontend.validate import pydantic_diagnostics
from archcomp.ir import Node, Origin, Ref, Scope
from archcomp.ops.registry import OpDef, Port, all_ops

MAX_NODES = 20_000  # ten times GPT-3 written out node by node; checked in about a second
MAX_REPEAT = MAX_NODES  # more copies than that could never be made
MAX_BLOCK_DEPTH = 32


@dataclass
class PendingRef:
    """A reference written in a spec, waiting to be linked to a node result."""

    ref: Ref
    origin: Origin


@dataclass(frozen=True)
class Site:
    """One copy of a node spec being expanded: where it is written and what it becomes."""

    ns: NodeSpec
    origin: Origin  # the node's mapping in its spec file
    env: Mapping[str, Any]  # params in scope (with 'index' inside a repeat)
    name: str  # qualified name of this copy: "encoder.layers.0"
    label: Any
    scopes: tuple[Scope, ...]
    shared_with: str | None  # copy 0's name when the repeat shares weights


@dataclass
class Body:
    """A list of nodes with its own inputs: the top level of a spec, or a block."""

    nodes: list[NodeSpec]
    doc: SourceDoc
    path: YamlPath  # path of the nodes list
    inputs: list[str]


@dataclass(frozen=True)
class Frame:
    """A body being expanded and what every node in it sees: the params in scope, the body's
    inputs, its ids so far, the prefix of their qualified names, the enclosing scopes and the
    blocks being expanded (outermost first)."""

    body: Body
    env: Mapping[str, Any]
    bindings: dict[str, PendingRef]  # the body's inputs
    prefix: str = ""  # "encoder.layers.0."
    scopes: tuple[Scope, ...] = ()
    stack: tuple[str, ...] = ()
    local: dict[str, str] = field(default_factory=dict)  # local id -> qualified name

    @property
    def doc(self) -> SourceDoc:
        return self.body.doc


@dataclass(frozen=True)
class Callee:
    """What a node calls: an op or a block, with its input ports and result names."""

    op: OpDef | None
    block: BlockDef | None
    ports: tuple[Port, ...]
    what: str  # "op 'linear'", "block 'gpt_block'", for messages
    results: tuple[str, ...]


@dataclass(frozen=True)
class Copies:
    """What the copies of one node share: its label, its ``repeat`` (None: not repeated; the
    param it names) and whether the copies share weights."""

    label: Any
    count: int | None
    param: str | None
    shared: bool


@dataclass
class Expanded:
    nodes: dict[str, Node] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)  # node names in the order they were made
    # Block instances and repeats: qualified name -> output name -> pending reference.
    aliases: dict[str, dict[str, PendingRef]] = field(default_factory=dict)
    first_output: dict[str, str] = field(default_factory=dict)
    pending: dict[str, dict[str, PendingRef | list[PendingRef]]] = field(default_factory=dict)
    # Block instances: qualified name -> the block's input name -> what it is bound to.
    block_inputs: dict[str, dict[str, PendingRef]] = field(default_factory=dict)
    # Nodes and block calls that are not there ('when' false, 'repeat: 0'): they pass on
    # their first input, aliased in ``aliases``.
    absent: dict[str, Absent] = field(default_factory=dict)
    # The model's inputs whose 'when' is false: name -> where it is declared.
    absent_inputs: dict[str, Origin] = field(default_factory=dict)


@dataclass(frozen=True)
class Absent:
    """A node or block call that is not there: its first result is its first input."""

    why: str  # "'when' is false", "'repeat' is 0"
    what: str  # "op 'lstm'", "block 'shortcut'"
    results: tuple[str, ...]  # what it would have made; only results[0] passes through
    reads: tuple[PendingRef, ...] = ()  # every input it would have read


class Expander:
    def __init__(self, prog: Program, rep: Reporter):
        self.prog = prog
        self.rep = rep
        self.ops = all_ops()
        self.out = Expanded()
        self.too_many = False
        # init defaults of the block calls being expanded, outermost first
        self.init_stack: list[tuple[dict[str, Any], Origin]] = []
        # ties a block call gives the nodes inside it: qualified node -> param -> target
        self.call_ties: dict[str, dict[str, tuple[str, str]]] = {}
        self._index_users: dict[str, bool] = {}  # block -> whether it mentions ${index}

    # -- bodies ---------------------------------------------------------------------------

    def body(self, frame: Frame) -> dict[str, str]:
        """Expand a body; returns (and fills ``frame.local`` with) local id -> qualified name."""
        body, bindings, local = frame.body, frame.bindings, frame.local
        chosen = self._claim_ids(frame)
        prev: PendingRef | None = next(iter(bindings.values()), None) if body.inputs else None
        for i, ns in enumerate(body.nodes):
            if self.too_many:
                return local
            path = (*body.path, i)
            qid = frame.prefix + ns.id
            if local.get(ns.id) != qid or chosen.get(ns.id, i) != i:
                continue
            default = prev
            prev = PendingRef(Ref(qid), Origin(body.doc, (*path, "id")))
            self.node(frame, ns, path, default)
        return local

    def _claim_ids(self, frame: Frame) -> dict[str, int]:
        """Give each node id of the body its qualified name; report duplicates and reserved
        names. Returns, for an id of alternatives, the index of the node expanded."""
        body, bindings, local = frame.body, frame.bindings, frame.local
        first_at: dict[str, int] = {}  # id -> index of the node that took it
        chosen = self._alternative(frame)
        for i, ns in enumerate(body.nodes):
            path = (*body.path, i)
            if chosen.get(ns.id, i) != i:
                continue  # an alternative of this id whose 'when' is false
            if ns.id in local or ns.id in bindings:
                first = first_at.get(ns.id, i)
                what = "an input" if ns.id in bindings else "a node"
                self.rep.add(
                    body.doc.diag(
                        "duplicate-id",
                        f"id '{ns.id}' is already used by {what}",
                        (*path, "id"),
                        related=()
                        if ns.id in bindings
                        else (body.doc.loc((*body.path, first, "id")),),
                    )
                )
                continue
            if reserved_id(ns.id):
                self.rep.add(
                    body.doc.diag(
                        "reserved-name",
                        f"'{ns.id}' is a reserved name and cannot be a node id",
                        (*path, "id"),
                        hint="rename the node"
                        + (" (ids starting with '_' are reserved)" if ns.id[0] == "_" else ""),
                    )
                )
            local[ns.id] = frame.prefix + ns.id
            first_at[ns.id] = i
        return chosen

    def _alternative(self, frame: Frame) -> dict[str, int]:
        """Alternatives: nodes of one id that each have a ``when`` (a dense feed-forward in
        some copies of a layer, experts in the others, under one id). Id -> the index of the
        one present (the first, absent, where none is); several present is an error."""
        body, env = frame.body, frame.env
        by_id: dict[str, list[int]] = {}
        for i, ns in enumerate(body.nodes):
            by_id.setdefault(ns.id, []).append(i)
        out: dict[str, int] = {}
        for nid, at in by_id.items():
            if len(at) < 2 or any(body.nodes[i].when is None for i in at):
                continue
            qid = frame.prefix + nid
            whens = {i: self._when(body.nodes[i], env, frame.doc, (*body.path, i), qid) for i in at}
            present = [i for i in at if whens[i] is True]
            out[nid] = present[0] if present else at[0]
            if len(present) > 1 and None not in whens.values():  # an invalid one is reported
                self.rep.add(
                    frame.doc.diag(
                        "duplicate-id",
                        f"id '{nid}' is present twice: of nodes of one id, each with a "
                        "'when', at most one may be present",
                        (*body.path, present[1], "when"),
                        related=(frame.doc.loc((*body.path, present[0], "when")),),
                        node=qid,
                    )
                )
        return out

    def ref(self, frame: Frame, text: str, origin: Origin) -> PendingRef | None:
        """What ``text`` ('node', 'node.result' or an input) names in ``frame``; None if
        nothing (reported)."""
        bindings, local = frame.bindings, frame.local
        name, _, result = text.partition(".")
        if name in local:
            return PendingRef(Ref(local[name], result or None), origin)
        if name in bindings:
            if result:
                self.rep.add(
                    origin.doc.diag(
                        "bad-reference",
                        f"'{text}': input '{name}' has no results to select",
                        origin.path,
                        hint=f"write '{name}'",
                    )
                )
                return None
            bound = bindings[name]
            if bound.ref.node in self.out.absent_inputs:  # an error where it is read
                return PendingRef(bound.ref, origin)
            return bound
        hint = None
        if not self.rep.full:  # past the shown errors a hint is never printed
            hint = self._reference_hint(frame, name, origin)
        self.rep.add(
            origin.doc.diag(
                "undefined-reference", f"undefined reference '{name}'", origin.path, hint=hint
            )
        )
        return None

    def _reference_hint(self, frame: Frame, name: str, origin: Origin) -> str | None:
        """'did you mean' among the names a reference from ``origin`` reads: a node's input
        reads the body's inputs and the nodes before it (a later node, which it may also
        read, only if no earlier name is close; never itself); the outputs read any name."""
        body, n, p = frame.body, len(frame.body.path), origin.path
        before, after = [*frame.bindings, *frame.local], []
        where = "defined here"
        at = p[n] if origin.doc is body.doc and p[:n] == body.path and len(p) > n else None
        if isinstance(at, int):  # in a node of this body
            earlier = {ns.id for ns in body.nodes[:at]}
            ids = [k for k in frame.local if k != body.nodes[at].id]
            before = [*frame.bindings, *(k for k in ids if k in earlier)]
            after = [k for k in ids if k not in earlier]
            where = f"defined before node '{body.nodes[at].id}'"
        close = did_you_mean(name, before) or did_you_mean(name, after)
        return close or (f"{where}: {listing(before)}" if before else None)

    # -- a node's inputs --------------------------------------------------------------------

    def _inputs(
        self,
        frame: Frame,
        ns: NodeSpec,
        path: YamlPath,
        callee: Callee,
        default: PendingRef | None,
    ) -> dict[str, PendingRef | list[PendingRef]] | None:
        """Bind a node's ``in`` to its ports; None if it failed (already reported). Without
        ``in``, the first port reads ``default`` (the node before)."""
        doc, raw, ports, what = frame.doc, ns.in_, callee.ports, callee.what
        if not ports:  # a source such as ``parameter``: nothing to read
            if raw is None:
                return {}
            self.rep.add(
                doc.diag(
                    "too-many-inputs", f"{what} takes no input", (*path, "in"), hint="drop 'in'"
                )
            )
            return None
        bound: dict[str, Any] | None
        if raw is None:
            if default is None:
                self.rep.add(
                    doc.diag(
                        "missing-input",
                        f"{what} has no input",
                        (*path, "id"),
                        hint="add 'in: <name>'",
                    )
                )
                return None
            # A list port reads the previous node as a one-entry list; the op's shape rule
            # says whether one is enough (``{op: add, scalar: 1}``, ``concat``).
            bound = {ports[0].name: [default] if ports[0].variadic else default}
        elif isinstance(raw, dict):
            bound = self._bind_by_name(frame, raw, path, callee)
        else:
            bound = self._bind_in_order(frame, raw, path, callee)
        if bound is None:
            return None
        return self._complete(frame, bound, raw is not None, path, callee)

    def _bind_in_order(
        self, frame: Frame, raw: str | list[str], path: YamlPath, callee: Callee
    ) -> dict[str, Any] | None:
        """``in: x`` or ``in: [x, y]``: the ports in order (a list port takes the whole list)."""
        ports, doc = callee.ports, frame.doc
        if isinstance(raw, str):
            r = self.ref(frame, raw, Origin(doc, (*path, "in")))
            if r is None:
                return None
            return {ports[0].name: [r] if ports[0].variadic else r}
        if ports[0].variadic and len(ports) == 1:
            refs = [self.ref(frame, t, Origin(doc, (*path, "in", j))) for j, t in enumerate(raw)]
            return {ports[0].name: refs} if all(r is not None for r in refs) else None
        if len(raw) > len(ports):
            self.rep.add(
                doc.diag(
                    "too-many-inputs",
                    f"{callee.what} takes at most {len(ports)} "
                    f"inputs ({', '.join(p.name for p in ports)}), found "
                    f"{len(raw)}",
                    (*path, "in"),
                )
            )
            return None
        bound: dict[str, Any] = {}
        ok = True
        for j, t in enumerate(raw):
            r = self.ref(frame, t, Origin(doc, (*path, "in", j)))
            ok = ok and r is not None
            bound[ports[j].name] = r
        return bound if ok else None

    def _bind_by_name(
        self, frame: Frame, raw: Mapping[str, Any], path: YamlPath, callee: Callee
    ) -> dict[str, Any] | None:
        """``in: {port: x, list_port: [y, z]}``."""
        doc, ports, what = frame.doc, callee.ports, callee.what
        names = [p.name for p in ports]
        bound: dict[str, Any] = {}
        ok = True
        for role, t in raw.items():
            if role not in names:
                self.rep.add(
                    doc.diag(
                        "unknown-input",
                        f"{what} has no input '{role}'",
                        (*path, "in", role),
                        key=True,
                        hint=did_you_mean(role, names) or f"inputs: {listing(names)}",
                    )
                )
                ok = False
                continue
            port = next(p for p in ports if p.name == role)
            if isinstance(t, list):
                if not port.variadic:
                    self.rep.add(
                        doc.diag(
                            "invalid-value",
                            f"input '{role}' takes one tensor, found a list",
                            (*path, "in", role),
                        )
                    )
                    ok = False
                    continue
                refs = [
                    self.ref(frame, x, Origin(doc, (*path, "in", role, j))) for j, x in enumerate(t)
                ]
                ok = ok and all(r is not None for r in refs)
                bound[role] = refs
            else:
                r = self.ref(frame, t, Origin(doc, (*path, "in", role)))
                ok = ok and r is not None
                bound[role] = [r] if port.variadic else r
        return bound if ok else None

    def _complete(
        self, frame: Frame, bound: dict[str, Any], written: bool, path: YamlPath, callee: Callee
    ) -> dict[str, PendingRef | list[PendingRef]] | None:
        """Fill ports that default to another port's input; report a missing required one.
        The result is in the op's port order, whatever order the spec wrote them in:
        lowerings and the compiled forward read the first port as the main input."""
        ports = callee.ports
        for p in ports:
            if p.name not in bound and p.default is not None and p.default in bound:
                bound[p.name] = bound[p.default]
            if p.name not in bound and not p.optional:
                self.rep.add(
                    frame.doc.diag(
                        "missing-input",
                        f"{callee.what} is missing input '{p.name}'",
                        (*path, "in") if written else (*path, "id"),
                    )
                )
                return None
        return {p.name: bound[p.name] for p in ports if p.name in bound}

    # -- one node --------------------------------------------------------------------------

    def node(self, frame: Frame, ns: NodeSpec, path: YamlPath, default: PendingRef | None) -> None:
        """Expand the node ``ns`` written at ``path`` of ``frame``'s body; ``default`` is what
        it reads without ``in`` (the node before it)."""
        doc, env, qid = frame.doc, frame.env, frame.prefix + ns.id
        callee = self._callee(ns, doc, path, qid)
        if callee is None:
            return
        present = self._when(ns, env, doc, path, qid)
        if present is None:
            return
        if not present:
            # Absent: no arguments, repeat or body are evaluated; its inputs are still bound,
            # so a misspelt reference is reported whatever the params.
            bound = self._inputs(frame, ns, path, callee, default)
            if bound is not None:
                self._pass_through(qid, bound, callee, "'when' is false", path, doc)
            return
        copies = self._copies_of(ns, env, doc, path, qid)
        if copies is None:
            return
        bound = self._inputs(frame, ns, path, callee, default)
        if bound is None:
            if callee.op is not None:  # still report every argument error of this node
                self._op_args(ns, callee.op, doc, path, env, qid)
            return
        if copies.count is not None and not callee.ports:
            self.rep.add(
                doc.diag(
                    "bad-repeat",
                    f"cannot repeat {callee.what}: it has no input to chain the copies through",
                    (*path, "repeat"),
                    node=qid,
                )
            )
            return
        if copies.count is not None and None in chain_map(callee).values():
            carried = ", ".join(p for p, r in chain_map(callee).items() if r is not None)
            self.rep.add(
                doc.diag(
                    "bad-repeat",
                    f"cannot repeat {callee.what}: its results all carry state to the inputs "
                    f"of the same name ({carried}); none is left for its first input "
                    f"'{callee.ports[0].name}'",
                    (*path, "repeat"),
                    node=qid,
                    hint="add a result for the first input to chain through, or rename one",
                )
            )
            return
        if copies.count == 0:  # an empty stack: its input passes through
            self._pass_through(qid, bound, callee, "'repeat' is 0", path, doc)
            return
        self._expand_copies(frame, ns, path, callee, bound, copies)

    def _callee(self, ns: NodeSpec, doc: SourceDoc, path: YamlPath, qid: str) -> Callee | None:
        """The op or block ``ns`` calls; None if there is none by that name (reported)."""
        op = self.ops.get(ns.op)
        block = self.prog.blocks.get(ns.op)
        if block is not None:
            ports = tuple(Port(n) for n in block.spec.inputs)
            results = tuple(_outputs_of(block.spec.outputs))
            return Callee(op, block, ports, f"block '{ns.op}'", results)
        if op is not None:
            return Callee(op, None, op.inputs, f"op '{op.name}'", op.results)
        self.rep.add(
            doc.diag(
                "unknown-op",
                f"unknown op '{ns.op}'",
                (*path, "op"),
                node=qid,
                hint=None
                if self.rep.full
                else torch_name_hint(ns.op, self.ops)
                or did_you_mean(ns.op, [*self.ops, *self.prog.blocks])
                or "run 'archcomp ops' for the list of ops",
            )
        )
        return None

    def _copies_of(
        self, ns: NodeSpec, env: Mapping[str, Any], doc: SourceDoc, path: YamlPath, qid: str
    ) -> Copies | None:
        """The node's label, ``repeat`` and ``shared``, evaluated; None if invalid (reported)."""
        label = _text(self._eval(ns.label, env, doc, (*path, "label"), qid))
        count, count_param = self._repeat(ns, env, doc, path, qid)
        if count is _FAILED:
            return None
        shared = self._eval(ns.shared, env, doc, (*path, "shared"), qid)
        if shared is True and count is None:
            self.rep.add(
                doc.diag(
                    "invalid-value",
                    "'shared: true' needs 'repeat': it shares weights between copies",
                    (*path, "shared"),
                    node=qid,
                    hint="add repeat: N, or use tie to share one parameter",
                )
            )
            return None
        if not isinstance(shared, bool):
            self.rep.add(
                doc.diag(
                    "invalid-value",
                    f"'shared' must be a bool, found {show(shared)}",
                    (*path, "shared"),
                    node=qid,
                )
            )
            return None
        return Copies(label, count, count_param, shared)

    def _expand_copies(
        self,
        frame: Frame,
        ns: NodeSpec,
        path: YamlPath,
        callee: Callee,
        bound: dict[str, Any],
        copies: Copies,
    ) -> None:
        """Make the node's copies (one when it is not repeated), each reading the one before;
        copies of a block after the first are clones of it where they cannot differ."""
        qid, origin, block = frame.prefix + ns.id, Origin(frame.doc, path), callee.block
        repeated = copies.count is not None
        n = copies.count if copies.count is not None else 1
        clonable = block is not None and n > 1 and not self._uses_index(ns, block)
        made: _Made | None = None
        if repeated:
            self.out.aliases[qid] = {
                r: PendingRef(Ref(f"{qid}.{n - 1}", r), origin) for r in callee.results
            }
            self.out.first_output[qid] = callee.results[0]
        for k in range(n):
            site = self._site(frame, ns, origin, copies, k)
            inputs = _chained(bound, callee, qid, k, origin)
            if made is not None and block is not None:
                self._clone(made, site, block, inputs)
            elif block is not None:
                mark = _Mark.of(self.out) if clonable and k == 0 else None
                if not self._tie_into(site, frame):
                    return
                self.block_call(site, block, inputs, frame.stack, repeated)
                self._tied_inside(site)
                if mark is not None and not self.rep.failed:
                    made = self._made(mark, site.name, inputs)
            else:
                assert callee.op is not None
                self.op_node(site, callee.op, inputs, frame)
            ahead = len(made.nodes) * (n - 1 - k) if made is not None else 0
            if len(self.out.nodes) + ahead > MAX_NODES:  # clones would only get there
                self.rep.add(
                    frame.doc.diag(
                        "too-many-nodes",
                        f"the spec expands to more than {MAX_NODES:,} nodes",
                        (*path, "repeat") if repeated else path,
                        node=qid,
                        hint="lower the repeat counts",
                    )
                )
                self.too_many = True
                return
            if repeated and self.rep.failed:
                # The spec is already invalid: more copies would only repeat this copy's
                # errors (and a repeat of a failing block could run 10^8 times).
                return

    def _site(self, frame: Frame, ns: NodeSpec, origin: Origin, copies: Copies, k: int) -> Site:
        """Copy ``k`` of the node: its name, params (with ``index`` in a repeat) and scopes."""
        qid = frame.prefix + ns.id
        if copies.count is None:
            return Site(ns, origin, dict(frame.env), qid, copies.label, frame.scopes, None)
        name = f"{qid}.{k}"
        scope = Scope(name, ns.op, copies.label, copies.count, copies.param, k, copies.shared)
        env = {**frame.env, "index": k}
        shared_with = f"{qid}.0" if copies.shared and k > 0 else None
        return Site(ns, origin, env, name, copies.label, (*frame.scopes, scope), shared_with)

    # -- copies of a repeated block ---------------------------------------------------------

    def _uses_index(self, ns: NodeSpec, block: BlockDef) -> bool:
        """Whether copies of ``block`` can differ: ``${...index...}`` in the call or the block."""
        cached = self._index_users.get(block.name)
        if cached is None:
            cached = self._index_users[block.name] = _mentions_index(block.spec.model_dump())
        return cached or _mentions_index(ns.model_dump())

    def _made(self, mark: _Mark, name: str, inputs: dict[str, Any]) -> _Made | None:
        """What copy 0 of a repeat made, if later copies can be clones of it (renamed)."""
        out = self.out
        nodes = [out.nodes[n] for n in out.added[mark.added :]]
        bound = {id(v): port for port, v in inputs.items()}
        if len(bound) != len(inputs) or not all(isinstance(v, PendingRef) for v in inputs.values()):
            return None  # one tensor bound to two ports: a clone could not tell them apart
        made = _Made(
            name,
            nodes,
            [(k, out.aliases[k]) for k in list(out.aliases)[mark.aliases :]],
            [(k, out.first_output[k]) for k in list(out.first_output)[mark.first_output :]],
            [(k, out.block_inputs[k]) for k in list(out.block_inputs)[mark.block_inputs :]],
            [(k, out.absent[k]) for k in list(out.absent)[mark.absent :]],
            bound,
        )
        refs: list[PendingRef] = []
        for node in nodes:
            for prs in out.pending[node.name].values():
                refs.extend(prs if isinstance(prs, list) else [prs])
        for _, d in (*made.aliases, *made.block_inputs):
            refs.extend(d.values())
        if not all(made.inside(pr.ref.node) or id(pr) in bound for pr in refs):
            return None
        return made

    def _clone(self, made: _Made, site: Site, block: BlockDef, inputs: dict[str, Any]) -> None:
        """Copy k of a repeat as copy 0 renamed: the same nodes, args and wiring, without
        evaluating and validating everything again (GPT-3 has 96 copies of one block)."""
        out, dst = self.out, site.name
        copy_scope = site.scopes[-1]
        if site.label is None:  # the block's label, as evaluated for copy 0
            own = next((s for n in made.nodes for s in n.scopes if s.name == made.name), None)
            copy_scope = replace(copy_scope, label=own.label if own else None)
        scopes: dict[int, Scope] = {}

        def scope(s: Scope) -> Scope:
            if s.name == made.name:
                return copy_scope
            if not made.inside(s.name):
                return s
            new = scopes.get(id(s))
            if new is None:
                new = scopes[id(s)] = replace(s, name=made.rename(s.name, dst))
            return new

        def ref(pr: PendingRef) -> PendingRef:
            port = made.bound.get(id(pr))
            if port is not None:
                return inputs[port]  # type: ignore[no-any-return]
            return PendingRef(Ref(made.rename(pr.ref.node, dst), pr.ref.result), pr.origin)

        for src in made.nodes:
            node = _renamed(src, made, site, scope)
            name = node.name
            out.nodes[name] = node
            out.order[name] = len(out.order)
            out.added.append(name)
            out.pending[name] = {
                port: [ref(p) for p in prs] if isinstance(prs, list) else ref(prs)
                for port, prs in out.pending[src.name].items()
            }
        for key, aliases in made.aliases:
            out.aliases[made.rename(key, dst)] = {o: ref(p) for o, p in aliases.items()}
        for key, first in made.first_output:
            out.first_output[made.rename(key, dst)] = first
        for key, bindings in made.block_inputs:
            out.block_inputs[made.rename(key, dst)] = {n: ref(p) for n, p in bindings.items()}
        for key, absent in made.absent:
            out.absent[made.rename(key, dst)] = replace(
                absent, reads=tuple(ref(p) for p in absent.reads)
            )

    def _repeat(
        self, ns: NodeSpec, env: Mapping[str, Any], doc: SourceDoc, path: YamlPath, qid: str
    ) -> tuple[Any, str | None]:
        """The copy count (0: an empty stack) and the param it names; None when the node has
        no ``repeat``, _FAILED when it is invalid (reported)."""
        if ns.repeat is None:
            return None, None
        value = self._eval(ns.repeat, env, doc, (*path, "repeat"), qid)
        if value is _FAILED:
            return _FAILED, None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.rep.add(
                doc.diag(
                    "invalid-value",
                    f"'repeat' must be an int >= 0, found {show(value)}",
                    (*path, "repeat"),
                    node=qid,
                    hint="0 is an empty stack: its input passes through",
                )
            )
            return _FAILED, None
        if value > MAX_REPEAT:
            self.rep.add(
                doc.diag(
                    "too-many-nodes",
                    f"'repeat' is {value:,}; the limit is {MAX_REPEAT:,}",
                    (*path, "repeat"),
                    node=qid,
                )
            )
            return _FAILED, None
        param = None
        if isinstance(ns.repeat, str):
            inner = ns.repeat.strip()[2:-1].strip()
            param = inner if inner.isidentifier() else None
        return value, param

    def _when(
        self, ns: NodeSpec, env: Mapping[str, Any], doc: SourceDoc, path: YamlPath, qid: str
    ) -> bool | None:
        """Whether the node is there (``when``, default true); None if invalid (reported)."""
        return self._condition(ns.when, env, doc, (*path, "when"), qid)

    def _condition(
        self, when: Any, env: Mapping[str, Any], doc: SourceDoc, at: YamlPath, qid: str
    ) -> bool | None:
        """A ``when`` (of a node or a tie) evaluated: true if not written; None if invalid
        (reported)."""
        if when is None:
            return True
        value = self._eval(when, env, doc, at, qid)
        if value is _FAILED:
            return None
        if not isinstance(value, bool):
            self.rep.add(
                doc.diag(
                    "invalid-value",
                    f"'when' must be a bool, found {'null' if value is None else repr(value)}",
                    at,
                    node=qid,
                    hint="write a comparison or a bool param: when: ${stride != 1}",
                )
            )
            return None
        return value

    def _pass_through(
        self,
        qid: str,
        bound: Mapping[str, PendingRef | list[PendingRef]],
        callee: Callee,
        why: str,
        path: YamlPath,
        doc: SourceDoc,
    ) -> None:
        """Make ``qid`` absent: readers of its first result read its first input instead."""
        # an op of no inputs (a parameter, a buffer) has nothing to pass on
        first = bound.get(callee.ports[0].name) if callee.ports else None
        if isinstance(first, list):
            first = first[0] if first else None
        if first is None:
            self.rep.add(
                doc.diag(
                    "missing-input",
                    f"{callee.what} is absent ({why}) and has no input to pass on",
                    (*path, "in"),
                    node=qid,
                    hint=None
                    if callee.ports
                    else "it takes no input: give 'when' to the nodes that read it instead",
                )
            )
            return
        results = callee.results
        chain = chain_map(callee)
        self.out.aliases[qid] = {chain.get(callee.ports[0].name) or results[0]: first}
        for port, result in chain.items():  # carried state passes on by name
            given = bound.get(port)
            if port != callee.ports[0].name and result is not None and given is not None:
                self.out.aliases[qid][result] = given  # type: ignore[assignment]
        self.out.first_output[qid] = results[0]
        reads = [r for v in bound.values() for r in (v if isinstance(v, list) else [v])]
        self.out.absent[qid] = Absent(why, callee.what, results, tuple(reads))

    def _eval(
        self,
        value: Any,
        env: Mapping[str, Any],
        doc: SourceDoc,
        path: YamlPath,
        node: str | None,
        op: str | None = None,
    ) -> Any:
        try:
            return _deep(value, env)
        except ExprError as exc:
            self.rep.add(
                doc.diag("bad-expression", exc.message, path, node=node, op=op, hint=exc.hint)
            )
            return _FAILED

    def op_node(self, site: Site, op: OpDef, inputs: dict[str, Any], frame: Frame) -> None:
        """Make the op node of ``site`` (one copy), its ties resolved in ``frame``."""
        ns, origin, env, name, label = site.ns, site.origin, site.env, site.name, site.label
        doc, path, local = origin.doc, origin.path, frame.local
        args = self._op_args(ns, op, doc, path, env, name)
        if args is None:
            return
        tie = self._ties(ns, env, doc, path, name, local)
        if tie is None:
            return
        tie = {**self.call_ties.pop(name, {}), **tie}  # a block call's tie into this node
        init = self._init(ns, env, doc, path, name)
        if init is None:
            return
        node = Node(
            name,
            op,
            args,
            {},
            origin,
            label,
            site.scopes,
            tie,
            site.shared_with,
            init,
            [(k, v, o) for d, o in reversed(self.init_stack) for k, v in d.items()],
        )
        self.out.nodes[name] = node
        self.out.order[name] = len(self.out.order)
        self.out.added.append(name)
        self.out.pending[name] = inputs

    def _ties(
        self,
        ns: NodeSpec,
        env: Mapping[str, Any],
        doc: SourceDoc,
        path: YamlPath,
        name: str,
        local: Mapping[str, str],
    ) -> dict[str, tuple[str, str]] | None:
        """The node's ties, parameter -> (qualified node, parameter); none when the tie's
        ``when`` is false (the node then has its own parameters); None if invalid (reported)."""
        if ns.tie is None:
            return {}
        targets = ns.tie.targets
        if not targets:
            self.rep.add(
                doc.diag(
                    "bad-tie",
                    "'tie' names no parameter",
                    (*path, "tie"),
                    node=name,
                    hint="tie: {weight: other_node.weight, when: ${flag}}",
                )
            )
            return None
        tie: dict[str, tuple[str, str]] = {}
        for pname, target in targets.items():
            tnode, _, tparam = target.partition(".")
            if tnode not in local:
                self.rep.add(
                    doc.diag(
                        "undefined-reference",
                        f"tie target '{tnode}' is not a node here",
                        (*path, "tie", pname),
                        node=name,
                        hint=did_you_mean(tnode, local),
                    )
                )
                return None
            qual, rest, missing = self._tie_node(local[tnode], tparam.split(".") if tparam else [])
            if missing is not None:  # a parameter inside a block call: no such node, expanded
                inner = missing[len(local[tnode]) + 1 :]
                self.rep.add(
                    doc.diag(
                        "undefined-reference",
                        f"tie target '{target}': '{tnode}' has no node '{inner}' before "
                        "this one (a tie into a block call names a node of it)",
                        (*path, "tie", pname),
                        node=name,
                    )
                )
                return None
            # a bare node id names that node's parameter of the same name, or its own tensor
            # where it is keyed by its id (``parameter`` with ``key: self``: BERT's bias)
            tparam = rest[0] if rest else ""
            tie[pname] = (qual, tparam or ("" if self._keyed_by_id(qual) else pname))
        # targets are checked whatever the condition, as an absent node's inputs are
        present = self._condition(ns.tie.when, env, doc, (*path, "tie", "when"), name)
        return None if present is None else tie if present else {}

    def _tie_node(self, qual: str, rest: list[str]) -> tuple[str, list[str], str | None]:
        """The node a tie target names, what follows it, and the node the path names that was
        not made before, if any. The path goes through block calls and repeats one name at a
        time (``model.embed_tokens.weight``, ``layers.0.self``), so it ends at the node it
        names, whose ``key: self`` tensor or same-named parameter a bare path means, and never
        at a module inside one (``a.0`` is node ``0`` of call ``a``, not a parameter of it)."""
        made, calls, absent = self.out.nodes, self.out.aliases, self.out.absent
        start = qual
        while rest and qual in calls and qual not in made and qual not in absent:
            qual, rest = f"{qual}.{rest[0]}", rest[1:]
        node = qual + "".join(f".{r}" for r in rest[:-1])
        known = node in made or node in absent or node in calls
        missing = None if known or (len(rest) < 2 and qual == start) else node
        return qual, rest, missing

    def _keyed_by_id(self, qual: str) -> bool:
        """Node ``qual`` is made and has one tensor, keyed by its id (``key: self``)."""
        node = self.out.nodes.get(qual)
        return node is not None and list(node.op.param_shapes(node.args)) == [""]

    def _tie_into(self, site: Site, frame: Frame) -> bool:
        """A block call's ``tie: {embed_tokens.weight: shared.weight}``: the parameter of a node
        inside the call tied to one the caller sees; False if invalid (reported)."""
        ns, doc, path = site.ns, site.origin.doc, site.origin.path
        tie = self._ties(ns, site.env, doc, path, site.name, frame.local)
        if tie is None:
            return False
        for pname, target in tie.items():
            # 'embed_tokens.weight' names a node's parameter; a bare 'bias' the tensor of a node
            # keyed by its id (key: self, BERT's bias), checked where the node is made
            inner, _, param = pname.rpartition(".")
            node, param = (inner, param) if inner else (pname, "")
            self.call_ties.setdefault(f"{site.name}.{node}", {})[param] = target
        return True

    def _tied_inside(self, site: Site) -> None:
        """Report the ties of a block call whose node the call did not make."""
        prefix = site.name + "."
        for qual in [q for q in self.call_ties if q.startswith(prefix)]:
            for param in self.call_ties.pop(qual):
                inner = qual[len(prefix) :]
                key = f"{inner}.{param}" if param else inner
                self.rep.add(
                    site.origin.doc.diag(
                        "undefined-reference",
                        f"tie '{key}': the block call has no node '{inner}'",
                        (*site.origin.path, "tie", key),
                        node=site.name,
                    )
                )

    def _init(
        self, ns: NodeSpec, env: Mapping[str, Any], doc: SourceDoc, path: YamlPath, name: str
    ) -> dict[str, Any] | None:
        """The node's ``init`` with expressions evaluated (``{"*": x}`` for a bare name)."""
        if ns.init is None:
            return {}
        init = self._eval(ns.init, env, doc, (*path, "init"), name)
        if init is _FAILED:
            return None
        return {"*": init} if isinstance(init, str) else dict(init)

    def _op_args(
        self,
        ns: NodeSpec,
        op: OpDef,
        doc: SourceDoc,
        path: YamlPath,
        env: Mapping[str, Any],
        name: str,
    ) -> Any:
        """The node's op arguments, evaluated and validated; None if they failed."""
        values: dict[str, Any] = {}
        ok = True
        for key, raw in ns.op_args.items():
            v = self._eval(raw, env, doc, (*path, key), name, op.name)
            ok = ok and v is not _FAILED
            if not _left_out(raw, v):
                values[key] = _given(raw, v)
        if not ok:
            return None
        try:
            return op.args.model_validate(values)
        except ValidationError as exc:
            self.rep.extend(
                pydantic_diagnostics(exc, doc, path, op.args, values, node=name, op=op.name)
            )
            return None

    def block_call(
        self,
        site: Site,
        block: BlockDef,
        inputs: dict[str, Any],
        stack: tuple[str, ...],
        repeated: bool,
    ) -> None:
        """Expand one call of ``block`` (``stack``: the blocks being expanded around it)."""
        name, doc, path = site.name, site.origin.doc, site.origin.path
        if not self._may_enter(site, block, stack):
            return
        block_env = self._block_env(site, block, repeated)
        # The block's own label ("conv3-${c}") reads the block's params, as its nodes do.
        block_label = _text(
            self._eval(block.spec.label, block_env, block.doc, (*block.path, "label"), name)
        )
        scopes = site.scopes
        if not repeated:
            drawn_open = block.spec.figure is not None and block.spec.figure.open
            scopes = (
                *scopes,
                Scope(name, block.name, site.label or block_label, drawn_open=drawn_open),
            )
        elif site.label is None:
            scopes = (*scopes[:-1], replace(scopes[-1], label=block_label))
        inner_bindings = dict(
            zip(block.spec.inputs, (inputs[n] for n in block.spec.inputs), strict=True)
        )
        self.out.block_inputs[name] = inner_bindings
        body = Body(block.spec.nodes, block.doc, (*block.path, "nodes"), list(block.spec.inputs))
        inner = Frame(body, block_env, inner_bindings, name + ".", scopes, (*stack, block.name))
        # Nodes made by this call: a suffix of out.added (copying the node set per call was
        # quadratic in the spec's size).
        start = len(self.out.added)
        init = self._init(site.ns, site.env, doc, path, name)
        if init is None:
            return
        self.init_stack.append((init, Origin(doc, (*path, "init"))))
        try:
            self.body(inner)
        finally:
            self.init_stack.pop()
        if site.shared_with is not None:
            for qn in self.out.added[start:]:
                self.out.nodes[qn].shared_with = site.shared_with + qn[len(name) :]
        self._block_outputs(inner, block, name)

    def _may_enter(self, site: Site, block: BlockDef, stack: tuple[str, ...]) -> bool:
        """Whether ``block`` may be expanded inside ``stack``: no cycle, not too deep."""
        doc, path = site.origin.doc, site.origin.path
        if block.name in stack:
            chain = " -> ".join([*stack[stack.index(block.name) :], block.name])
            self.rep.add(
                doc.diag(
                    "block-cycle",
                    f"block '{block.name}' uses itself: {chain}",
                    (*path, "op"),
                    node=site.name,
                )
            )
            return False
        if len(stack) >= MAX_BLOCK_DEPTH:
            self.rep.add(
                doc.diag(
                    "too-deep",
                    f"blocks nest deeper than {MAX_BLOCK_DEPTH}",
                    (*path, "op"),
                    node=site.name,
                )
            )
            return False
        return True

    def _block_env(self, site: Site, block: BlockDef, repeated: bool) -> dict[str, Any]:
        """The block's params for this call: the call's arguments, evaluated, over the block's
        defaults (with ``index`` inside a repeat)."""
        args = self._block_args(site, block)
        doc, path, name = site.origin.doc, site.origin.path, site.name
        self.rep.extend(check_names(block.spec.params, block.doc, (*block.path, "params")))

        def report(pname: str, problem: ParamProblem) -> None:
            if pname in args:
                self.rep.add(
                    doc.diag(
                        "invalid-value",
                        problem.message,
                        (*path, pname),
                        node=name,
                        hint=problem.hint,
                    )
                )
            else:
                self.rep.add(
                    block.doc.diag(
                        "invalid-value",
                        problem.message,
                        (*block.path, "params", pname),
                        hint=problem.hint,
                    )
                )

        env = site.env
        extra = {"index": env["index"]} if "index" in env and repeated else None
        return resolve(block.spec.params, args, extra=extra, report=report)

    def _block_args(self, site: Site, block: BlockDef) -> dict[str, Any]:
        """The call's arguments, evaluated; unknown params and failed expressions are left out
        (reported)."""
        doc, path, name = site.origin.doc, site.origin.path, site.name
        args: dict[str, Any] = {}
        for key, raw in site.ns.op_args.items():
            if key not in block.spec.params:
                self.rep.add(
                    doc.diag(
                        "unknown-key",
                        f"block '{block.name}' has no param '{key}'",
                        (*path, key),
                        key=True,
                        node=name,
                        hint=did_you_mean(key, block.spec.params)
                        or f"params: {listing(list(block.spec.params)) or 'none'}",
                    )
                )
                continue
            v = self._eval(raw, site.env, doc, (*path, key), name)
            if v is not _FAILED:
                args[key] = v
        return args

    def _block_outputs(self, inner: Frame, block: BlockDef, name: str) -> None:
        """Alias the call's results to what the block's ``outputs`` name inside it."""
        outs = _outputs_of(block.spec.outputs)
        self.out.aliases[name] = {}
        opath = (*block.path, "outputs")
        for j, (oname, target) in enumerate(outs.items()):
            p = (
                opath
                if isinstance(block.spec.outputs, str)
                else ((*opath, j) if isinstance(block.spec.outputs, list) else (*opath, oname))
            )
            r = self.ref(inner, target, Origin(block.doc, p))
            if r is not None:
                self.out.aliases[name][oname] = r
        self.out.first_output[name] = next(iter(outs))


@dataclass(frozen=True)
class _Mark:
    """How far each table of :class:`Expanded` had grown when a copy began."""

    added: int
    aliases: int
    first_output: int
    block_inputs: int
    absent: int

    @staticmethod
    def of(out: Expanded) -> _Mark:
        return _Mark(
            len(out.added),
            len(out.aliases),
            len(out.first_output),
            len(out.block_inputs),
            len(out.absent),
        )


@dataclass
class _Made:
    """Copy 0 of a repeated block: what later copies clone."""

    name: str  # "h_.0"
    nodes: list[Node]
    aliases: list[tuple[str, dict[str, PendingRef]]]
    first_output: list[tuple[str, str]]
    block_inputs: list[tuple[str, dict[str, PendingRef]]]
    absent: list[tuple[str, Absent]]
    bound: dict[int, str]  # id of an input binding of copy 0 -> its port

    def inside(self, qualified: str) -> bool:
        return qualified == self.name or qualified.startswith(self.name + ".")

    def rename(self, qualified: str, dst: str) -> str:
        return dst + qualified[len(self.name) :] if self.inside(qualified) else qualified


def _renamed(src: Node, made: _Made, site: Site, scope: Callable[[Scope], Scope]) -> Node:
    """Node ``src`` of copy 0 as a node of the copy ``site``: renamed, with its scopes, ties
    and weight sharing moved along (its args object is shared, not copied)."""
    dst = site.name
    shared = src.shared_with
    if site.shared_with is not None:
        shared = site.shared_with + src.name[len(made.name) :]
    elif shared is not None and made.inside(shared):
        shared = made.rename(shared, dst)
    return Node(
        made.rename(src.name, dst),
        src.op,
        src.args,
        {},
        src.origin,
        src.label,
        tuple(scope(s) for s in src.scopes),
        {p: (made.rename(n, dst), q) for p, (n, q) in src.tie.items()},
        shared,
        dict(src.init),
        list(src.init_defaults),
    )


_INDEX_WORD = re.compile(r"\bindex\b")


def _mentions_index(value: Any) -> bool:
    """Whether an expression in ``value`` may read ``index``: the word anywhere after a ``${``
    (conservative: a false alarm only costs the clone)."""
    if isinstance(value, str):
        start = value.find("${")
        return start >= 0 and _INDEX_WORD.search(value, start) is not None
    if isinstance(value, dict):
        return any(_mentions_index(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_mentions_index(v) for v in value)
    return False


class _Failed:
    pass


_FAILED: Any = _Failed()


def _text(label: Any) -> str | None:
    """A label's value as the text drawn (``${N}`` gives ``"6"``); None when there is none."""
    if label is None or label is _FAILED:
        return None
    return label if isinstance(label, str) else as_text(label)


def _left_out(raw: Any, value: Any) -> bool:
    """Whether an argument's ``${...}`` gave null: it is not given (the op's default)."""
    return value is None and is_expression(raw)


def _given(raw: Any, value: Any) -> Any:
    """An argument's evaluated ``value`` without the fields of its mappings that ``${...}``
    made null (``raw``: as written)."""
    if isinstance(value, dict) and isinstance(raw, dict):
        return {k: _given(raw[k], v) for k, v in value.items() if not _left_out(raw[k], v)}
    return value


def _deep(value: Any, env: Mapping[str, Any]) -> Any:
    if isinstance(value, list):
        return [_deep(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _deep(v, env) for k, v in value.items()}
    return substitute(value, env)


def chain_map(callee: Callee) -> dict[str, str | None]:
    """Which result of copy k each input of copy k+1 reads in a repeat: an input named like
    a result reads that result (state carried from copy to copy); the first input, unless
    so named, reads the first result not so carried (None: there is none left)."""
    ports = [p.name for p in callee.ports]
    chain: dict[str, str | None] = {p: p for p in ports if p in callee.results}
    if ports and ports[0] not in chain:
        rest = [r for r in callee.results if r not in chain]
        chain[ports[0]] = rest[0] if rest else None
    return chain


def _chained(
    bound: dict[str, Any], callee: Callee, qid: str, k: int, origin: Origin
) -> dict[str, Any]:
    """The inputs of copy ``k`` of a repeat: copy k > 0 reads copy k-1's results as
    :func:`chain_map` says; other inputs are shared by every copy."""
    inputs = dict(bound)
    if k == 0:
        return inputs
    for port, result in chain_map(callee).items():
        assert result is not None  # reported before the copies are made
        prev = PendingRef(Ref(f"{qid}.{k - 1}", result), origin)
        given = inputs[port]
        # A list's first entry is the stack's input; the rest is shared by every copy.
        inputs[port] = [prev, *given[1:]] if isinstance(given, list) else prev
    return inputs


def _outputs_of(outputs: Any) -> dict[str, str]:
    """Output name -> reference text, for the three ways of writing ``outputs``."""
    if outputs is None:
        return {}
    if isinstance(outputs, str):
        return {outputs.replace(".", "_"): outputs}
    if isinstance(outputs, list):
        return {t.replace(".", "_"): t for t in outputs}
    return dict(outputs)


def torch_name_hint(name: str, ops: Mapping[str, Any]) -> str | None:
    """``nn.ReLU``, ``torch.nn.LayerNorm``, ``F.gelu``: the archcomp op of that torch name."""
    last = name.rsplit(".", 1)[-1]
    if last == name and not last[:1].isupper():
        return None
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", last).lower()  # LayerNorm -> layer_norm
    for candidate in dict.fromkeys([last.lower(), snake]):
        if candidate in ops:
            return f"did you mean '{candidate}'? (archcomp's op for torch's {name})"
    return None
