"""IR -> a drawing plan: boxes, nested frames and edges, before any Graphviz syntax.

The plan decides what the reader sees:

- absent nodes (``when`` false, ``repeat: 0``) are not in the IR, so nothing of them is drawn;
- a repeated block is drawn once (copy 0) inside an "N×" frame; copies 1..N-1 are not drawn
  and edges to or from them are routed to copy 0, so the last copy's output leaves the frame;
  where copies differ in their nodes (``when`` on ``index``), each run of alike copies is
  drawn once in its own frame inside it ("copy 0", "copies 1–3 (3×)");
- a block is drawn as one box when it is *collapsed* (the default for blocks that contain no
  other block), or opened into a frame when it is *expanded* (``--expand``, ``--depth``,
  repeated blocks, blocks that contain blocks);
- a composite op named by ``--expand`` is drawn from its built-in figure (Figure 2);
- an ``add`` feeding only a ``layer_norm`` becomes one "Add & Norm" box; dropout is not drawn;
- edges that bypass a sub-layer into its Add & Norm are marked residual.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from archcomp.backends.graphviz import style as st
from archcomp.backends.graphviz.figures import FIGURES, Figure
from archcomp.base.errors import UsageError, did_you_mean
from archcomp.ir import Graph, Node, Ref, Scope
from archcomp.ir.dims import fmt_shape

Direction = Literal["auto", "BT", "LR"]
DEFAULT_MAX_BOXES = 2500
DEFAULT_MAX_EDGES = 10_000  # edge segments: each edge counts the ranks it crosses


@dataclass(frozen=True)
class DrawOptions:
    """What to draw. ``expand`` names blocks, block instances or composite ops to open."""

    expand: tuple[str, ...] = ()
    depth: int | None = None
    shapes: bool = False
    param_counts: bool = False
    direction: Direction = "auto"
    dropout: bool = False
    max_boxes: int = DEFAULT_MAX_BOXES
    max_edges: int = DEFAULT_MAX_EDGES


@dataclass
class Box:
    id: str
    label: str
    family: str
    kind: str = "op"  # op | block | input | output | wave | circle | part
    op: str | None = None
    caption: str | None = None
    note: str | None = None
    frame: str | None = None
    xlabel: str | None = None
    params: int = 0


@dataclass
class Frame:
    id: str
    kind: str  # repeat | block | group | figure | stack | stack_inner
    label: str | None
    parent: str | None


@dataclass
class Edge:
    src: str
    dst: str
    label: str | None = None
    kind: str = "data"  # data | residual | cross | loop


@dataclass
class Drawing:
    name: str
    direction: Literal["BT", "LR"]
    boxes: dict[str, Box] = field(default_factory=dict)
    frames: dict[str, Frame] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    same_rank: list[tuple[str, ...]] = field(default_factory=list)


def _canon(name: str, scopes: Iterable[Scope], leaders: Mapping[str, Mapping[int, int]]) -> str:
    """The drawn twin of a name: every repeat index on the way set to the first copy of its
    run (0, unless copies differ: see :func:`copy_runs`)."""
    parts = name.split(".")
    for s in scopes:
        if s.repeat is not None and s.index:
            pos = s.name.count(".")
            if pos < len(parts):
                parts[pos] = str(leaders.get(_base(s), {}).get(s.index, 0))
    return ".".join(parts)


def copy_runs(g: Graph) -> dict[str, dict[int, int]]:
    """Repeats whose copies differ in their nodes (``when: ${index == 0}``): repeat -> copy
    index -> the first copy of its run of consecutive copies with the same nodes. Each run is
    drawn once; a repeat whose copies are all alike is not listed (copy 0 stands for all)."""
    nodes: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for n in g.nodes.values():
        for s in n.scopes:
            if s.repeat is not None and s.index is not None:
                nodes[_base(s)][s.index].append(n.name[len(s.name) :])
    out: dict[str, dict[int, int]] = {}
    for base, copies in nodes.items():
        firsts: dict[int, int] = {}
        last: list[str] | None = None
        for k in sorted(copies):
            if copies[k] != last:
                first, last = k, copies[k]
            firsts[k] = first
        if len(set(firsts.values())) > 1:
            out[base] = firsts
    return out


def run_label(firsts: Mapping[int, int], first: int) -> str:
    """``copy 0``, ``copies 1–3 (3×)``: which copies a run's frame stands for."""
    members = [k for k, v in firsts.items() if v == first]
    if len(members) == 1:
        return f"copy {first}"
    return f"copies {first}–{members[-1]} ({len(members)}×)"


def _base(s: Scope) -> str:
    return s.name.rsplit(".", 1)[0]


def _is_op_repeat(node: Node, s: Scope) -> bool:
    return s.name == node.name


def _block_scopes(node: Node) -> list[Scope]:
    return [s for s in node.scopes if not _is_op_repeat(node, s)]


def repeat_label(s: Scope) -> str:
    if s.repeat_param:
        text = f"{s.repeat_param}× ({s.repeat_param} = {s.repeat})"
    else:
        text = f"{s.repeat}×"
    return text + (" (shared)" if s.shared else "")


class Planner:
    def __init__(self, g: Graph, opts: DrawOptions):
        self.g = g
        self.opts = opts
        self.expand = set(opts.expand)
        self.d = Drawing(g.name, self._direction())
        self.item_of: dict[str, str] = {}  # canonical node -> box its inputs enter
        self.out_of: dict[str, str] = {}  # canonical node -> box its result leaves
        self.port_box: dict[tuple[str, str], str] = {}  # (canonical node, port) -> box
        self.alias: dict[str, Ref] = {}  # elided node -> the ref it passes through
        self.collapsed_ops: dict[str, list[Node]] = defaultdict(list)
        self.collapsed_scope: dict[str, Scope] = {}
        self.edge_keys: set[tuple[str, ...]] = set()
        self.labelled: set[tuple[str, str, str]] = set()
        self.hidden_inputs = {n for n, i in g.inputs.items() if i.type.dtype == "bool"}
        self.lr = self.d.direction == "LR"
        self.params = self._param_counts() if opts.param_counts else {}
        self.runs = copy_runs(g)

    def _canon(self, name: str, scopes: Iterable[Scope]) -> str:
        return _canon(name, scopes, self.runs)

    # -- decisions ------------------------------------------------------------------------

    def _direction(self) -> Literal["BT", "LR"]:
        if self.opts.direction != "auto":
            return self.opts.direction
        fams = {n.op.style.family for n in self.g.nodes.values()}
        if fams & {"conv", "pool"} and not fams & {"attention", "recurrent"}:
            return "LR"
        return "BT"

    def _check_expand_names(self) -> None:
        known: set[str] = set(FIGURES)
        for n in self.g.nodes.values():
            known.add(n.op.name)
            known.add(self._canon(n.name, n.scopes))
            if n.label:
                known.add(n.label)
            for s in _block_scopes(n):
                known.update(
                    {s.block, self._canon(s.name, n.scopes), self._canon(_base(s), n.scopes)}
                )
                if s.label:
                    known.add(s.label)
        for name in sorted(self.expand - known):
            hint = did_you_mean(name, known)
            blocks = sorted({s.block for n in self.g.nodes.values() for s in _block_scopes(n)})
            raise UsageError(
                f"--expand {name}: no block, block instance or composite op of that name"
                + (f"; {hint}" if hint else "")
                + (f" (blocks: {', '.join(blocks)})" if blocks and not hint else "")
            )

    def _named(self, s: Scope, node: Node) -> bool:
        c = self._canon(s.name, node.scopes)
        names = (
            {s.block, c, self._canon(_base(s), node.scopes)}
            if s.repeat is not None
            else {s.block, c}
        )
        if s.label:
            names.add(s.label)
        return bool(names & self.expand)

    def _scope_open(self, node: Node, i: int, forced: set[str], nested: set[str]) -> bool:
        s = node.scopes[i]
        c = self._canon(s.name, node.scopes)
        if c in forced:
            return True
        level = sum(1 for t in node.scopes[: i + 1] if not _is_op_repeat(node, t))
        if self.opts.depth is not None:
            return level <= self.opts.depth
        return s.repeat is not None or c in nested

    def _op_open(self, node: Node, op: str, level: int) -> bool:
        if op in self.expand or self._canon(node.name, node.scopes) in self.expand:
            return True
        if node.label and node.label in self.expand and node.op.name == op:
            return True
        return self.opts.depth is not None and level <= self.opts.depth

    # -- the plan -------------------------------------------------------------------------

    def plan(self) -> Drawing:
        self._check_expand_names()
        g = self.g
        forced: set[str] = set()
        nested: set[str] = set()
        for n in g.nodes.values():
            bs = [(i, s) for i, s in enumerate(n.scopes) if not _is_op_repeat(n, s)]
            for j, (_, s) in enumerate(bs):
                if j + 1 < len(bs):
                    nested.add(self._canon(s.name, n.scopes))
            for j, (_, s) in enumerate(bs):
                if self._named(s, n):
                    forced.update(self._canon(t.name, n.scopes) for _, t in bs[: j + 1])
        for name in g.inputs:
            if name not in self.hidden_inputs:
                self._input_box(name)
        for n in g.nodes.values():
            if self._canon(n.name, n.scopes) == n.name:
                self._place(n, forced, nested)
        self._finish_collapsed()
        for n in g.nodes.values():
            self._edges_into(n)
        for oname, ref in g.outputs.items():
            src = self._src_box(ref)
            if src is None:
                continue
            producer = g.nodes.get(self._resolve(ref).node)
            box = Box(f"output/{oname}", st.output_label(oname, producer), "io", kind="output")
            if self.lr:
                t = g.type_of(ref)
                box.caption = st.feature_maps(t.shape) if t else None
            self.d.boxes[box.id] = box
            self._edge(src, box.id, self._edge_label(ref), ("out", oname))
        self._fuse_add_norm()
        if self.lr:
            self._fold_activations()
        self._loops()
        check_size(self.d, self.opts)  # before the passes whose cost grows with edges x boxes
        self._mark_residuals()
        self._mark_cross()
        return self.d

    def _input_box(self, name: str) -> None:
        info = self.g.inputs[name]
        box = Box(f"input/{name}", st.INPUT_WORDS.get(name, name), "io", kind="input")
        if self.lr:
            box.caption = st.feature_maps(info.type.shape)
        self.d.boxes[box.id] = box

    def _frame(self, fid: str, kind: str, label: str | None, parent: str | None) -> str:
        if fid not in self.d.frames:
            self.d.frames[fid] = Frame(fid, kind, label, parent)
        return fid

    def _place(self, n: Node, forced: set[str], nested: set[str]) -> None:
        frame: str | None = None
        c = n.name
        for i, s in enumerate(n.scopes):
            if s.repeat is not None:
                base = self._canon(_base(s), n.scopes)
                frame = self._frame(f"repeat:{base}", "repeat", repeat_label(s), frame)
                firsts = self.runs.get(_base(s))
                if firsts is not None and s.index is not None:  # copies differ: one per run
                    run = firsts[s.index]
                    frame = self._frame(f"run:{base}.{run}", "block", run_label(firsts, run), frame)
            if _is_op_repeat(n, s):
                break
            sid = self._canon(s.name, n.scopes)
            if not self._scope_open(n, i, forced, nested):
                self.collapsed_ops[sid].append(n)
                self.collapsed_scope.setdefault(sid, s)
                if sid not in self.d.boxes:
                    self.d.boxes[sid] = Box(sid, "", "block", kind="block", frame=frame)
                self.item_of[c] = self.out_of[c] = sid
                self.d.boxes[sid].params += self.params.get(n.name, 0)
                return
            if s.repeat is None:
                explicit = sid in forced or self.opts.depth is not None
                kind = "block" if explicit else "group"
                label = s.label or st.humanize(s.block)
                frame = self._frame(f"block:{sid}", kind, label, frame)
        family = n.op.style.family
        if family in st.ELIDED_FAMILIES and not self.opts.dropout:
            first = n.refs()[0] if n.refs() else None
            if first is not None:
                self.alias[c] = first
                return
        level = len(_block_scopes(n)) + 1
        fig = FIGURES.get(n.op.name)
        if fig is not None and self._op_open(n, fig.op, level):
            self._figure(n, fig, c, frame, level)
            return
        if family == "posenc":
            self._posenc(n, c, frame)
            return
        box = Box(c, st.op_label(n), family, op=n.op.name, frame=frame)
        if n.op.style.shape == "circle":
            box.kind = "circle"
        box.caption = self._caption(n)
        box.params = self.params.get(n.name, 0)
        self.d.boxes[c] = box
        self.item_of[c] = self.out_of[c] = c

    def _caption(self, n: Node) -> str | None:
        lines = []
        detail = st.arg_detail(n)
        if detail and detail not in (n.label or ""):  # "3×3 conv, 64" says it already
            lines.append(detail)
        if self.lr and n.outputs:
            fm = st.feature_maps(next(iter(n.outputs.values())).shape)
            if fm:
                lines.append(fm)
        return "\n".join(lines) or None

    def _posenc(self, n: Node, c: str, frame: str | None) -> None:
        """The paper's drawing: a circled sine wave joined by a circled plus."""
        adds = any(
            (t := self.g.type_of(r)) is not None and n.outputs and t in n.outputs.values()
            for r in n.refs()
        )
        if "sinusoidal" in n.op.name:
            wave = Box(
                f"{c}/wave",
                "∿",
                "posenc",
                kind="wave",
                op=n.op.name,
                frame=frame,
                xlabel=n.label or "Positional\nEncoding",
            )
        else:
            wave = Box(f"{c}/wave", st.op_label(n), "embedding", op=n.op.name, frame=frame)
        wave.params = self.params.get(n.name, 0)
        if not adds:
            wave.id = c
            self.d.boxes[c] = wave
            self.item_of[c] = self.out_of[c] = c
            return
        self.d.boxes[wave.id] = wave
        self.d.boxes[c] = Box(c, "+", "arith", kind="circle", op="add", frame=frame)
        self._edge(wave.id, c, None, ("pe", c))
        self.item_of[c] = self.out_of[c] = c

    def _figure(
        self, n: Node, fig: Figure, c: str, parent: str | None, level: int, inside: str = ""
    ) -> dict[str, str]:
        """Draw a composite op's inside; returns its port -> box map (and 'out')."""
        prefix = f"{c}/{inside}" if inside else f"{c}/"
        label = st.op_label(n) if not inside else st.humanize(fig.op)
        if inside:
            label = next(p.label for p in FIGURES[n.op.name].parts if p.op == fig.op)
        note = None
        if not inside and self.params.get(n.name):
            note = f"{st.fmt_count(self.params[n.name])} params"
        frame = self._frame(f"figure:{prefix}", "figure", label, parent)
        if note:
            self.d.frames[frame].label = f"{label}\n{note}"
        stack_frame = frame
        if fig.stack:
            count = getattr(n.args, fig.stack_count or "", None)
            sym = fig.stack_symbol
            text = f"{sym}× ({sym} = {count})" if count is not None else f"{sym}×"
            outer = self._frame(f"stack:{prefix}", "stack", text, frame)
            stack_frame = self._frame(f"stack_inner:{prefix}", "stack_inner", None, outer)
        ports: dict[str, str] = {}
        for p in fig.parts:
            where = stack_frame if p.id in fig.stack else frame
            pid = f"{prefix}{p.id}"
            if p.op is not None and p.op in FIGURES and self._op_open(n, p.op, level + 1):
                inner = self._figure(n, FIGURES[p.op], c, where, level + 1, inside=p.id + "/")
                for port, box in inner.items():
                    ports[f"{p.id}:{port}"] = box
                ports[p.id] = inner["out"]
                continue
            self.d.boxes[pid] = Box(pid, p.label, p.family, kind="part", frame=where)
            ports[p.id] = pid
        for group in fig.same_rank:
            self.d.same_rank.append(tuple(ports[p] for p in group))
        for a, b in fig.edges:
            src = ports[a]
            dst = ports.get(b) or ports[b.split(":")[0]]
            self._edge(src, dst, None, ("fig", src, dst))
        out: dict[str, str] = {"out": ports[fig.result]}
        for port, target in fig.ports.items():
            out[port] = ports.get(target) or ports[target.split(":")[0]]
        if not inside:
            for port, box in out.items():
                if port != "out":
                    self.port_box[(c, port)] = box
            self.item_of[c] = out["query"] if "query" in out else out["out"]
            self.out_of[c] = out["out"]
        return out

    def _finish_collapsed(self) -> None:
        for sid, nodes in self.collapsed_ops.items():
            s = self.collapsed_scope[sid]
            box = self.d.boxes[sid]
            ops = [n.op.name for n in nodes]
            if st.is_add_norm(ops):
                box.label = s.label or "Add & Norm"
                box.family = "addnorm"
            else:
                box.label = s.label or st.humanize(s.block)
                box.family = st.block_family(n.op.style.family for n in nodes)
            if box.family == "recurrent":
                box.op = next(n.op.name for n in nodes if n.op.style.family == "recurrent")

    # -- edges ----------------------------------------------------------------------------

    def _resolve(self, ref: Ref) -> Ref:
        """Follow elided (undrawn) nodes back to what they pass through; canonical names."""
        for _ in range(len(self.alias) + 1):
            node = self.g.nodes.get(ref.node)
            if node is None:
                return ref
            c = self._canon(ref.node, node.scopes)
            ref = Ref(c, ref.result)
            if c not in self.alias:
                return ref
            ref = self.alias[c]
        return ref

    def _src_box(self, ref: Ref) -> str | None:
        if ref.node in self.g.inputs:
            return None if ref.node in self.hidden_inputs else f"input/{ref.node}"
        r = self._resolve(ref)
        if r.node in self.g.inputs:
            return None if r.node in self.hidden_inputs else f"input/{r.node}"
        return self.out_of.get(r.node)

    def _edge_label(self, ref: Ref) -> str | None:
        parts = []
        node = self.g.nodes.get(ref.node)
        if node is not None and len(node.op.results) > 1 and ref.result:
            parts.append(ref.result)
        if self.opts.shapes:
            t = self.g.type_of(ref)
            if t is not None:
                parts.append(fmt_shape(t.shape))
        return " ".join(parts) or None

    def _edge(self, src: str, dst: str, label: str | None, key: tuple[str, ...]) -> None:
        full = (src, dst, *key)
        if full in self.edge_keys:
            return
        self.edge_keys.add(full)
        if label is not None:
            if (src, dst, label) in self.labelled:
                label = None  # parallel edges (query, key, value) carry their label once
            else:
                self.labelled.add((src, dst, label))
        self.d.edges.append(Edge(src, dst, label))

    def _edges_into(self, n: Node) -> None:
        c = self._canon(n.name, n.scopes)
        if c in self.alias:
            return
        copies = {_base(s): s.index for s in n.scopes if s.repeat is not None}
        for port, refs in n.inputs.items():
            for ref in refs if isinstance(refs, list) else [refs]:
                src_node = self.g.nodes.get(ref.node)
                if src_node is not None and any(
                    copies.get(_base(s), s.index) != s.index
                    and self._first(s, copies[_base(s)]) == self._first(s, s.index)
                    for s in src_node.scopes
                    if s.repeat is not None
                ):
                    continue  # copy k -> copy k+1 of a run: drawn once, as the frame
                src = self._src_box(ref)
                dst = self.port_box.get((c, port)) or self.item_of.get(c)
                if src is None or dst is None or src == dst:
                    continue
                kind = self.d.boxes[dst].kind
                key = (port, c) if kind not in ("block",) else ()
                self._edge(src, dst, self._edge_label(ref), key)

    def _first(self, s: Scope, index: int | None) -> int | None:
        """The first copy of the run that copy ``index`` of ``s``'s repeat belongs to."""
        firsts = self.runs.get(_base(s))
        return 0 if firsts is None or index is None else firsts.get(index, 0)

    def _edge_index(self) -> tuple[dict[str, list[Edge]], dict[str, list[Edge]]]:
        """Edges by source box and by destination box."""
        outs: dict[str, list[Edge]] = defaultdict(list)
        ins: dict[str, list[Edge]] = defaultdict(list)
        for e in self.d.edges:
            outs[e.src].append(e)
            ins[e.dst].append(e)
        return outs, ins

    def _fuse_add_norm(self) -> None:
        """``add`` whose one consumer is a ``layer_norm`` fed only by it: one Add & Norm box."""
        outs, ins = self._edge_index()
        drop: set[str] = set()
        for box in list(self.d.boxes.values()):
            if box.op != "add" or box.kind != "circle" or len(outs[box.id]) != 1:
                continue
            nxt = self.d.boxes[outs[box.id][0].dst]
            if nxt.op != "layer_norm" or len(ins[nxt.id]) != 1 or nxt.frame != box.frame:
                continue
            nxt.label = "Add & Norm" if nxt.label == self._norm_word(nxt) else nxt.label
            nxt.family = "addnorm"
            nxt.params += box.params
            for e in ins[box.id]:
                e.dst = nxt.id
            drop.add(box.id)
        if drop:
            self.d.edges = [e for e in self.d.edges if e.src not in drop]
            for b in drop:
                del self.d.boxes[b]
            for k, v in list(self.item_of.items()):
                if v in drop:
                    self.item_of[k] = self.out_of[k]

    def _fold_activations(self) -> None:
        """In a left-to-right pipeline an activation joins the box before it: "Conv + ReLU"."""
        outs, ins = self._edge_index()
        drop: set[str] = set()
        for box in list(self.d.boxes.values()):
            if box.family != "activation" or box.kind != "op" or len(ins[box.id]) != 1:
                continue
            prev = self.d.boxes[ins[box.id][0].src]
            if prev.kind != "op" or prev.id in drop or len(outs[prev.id]) != 1:
                continue
            prev.label = f"{prev.label} + {box.label}"
            for e in outs[box.id]:
                e.src = prev.id
            drop.add(box.id)
        self.d.edges = [e for e in self.d.edges if e.dst not in drop]
        for b in drop:
            del self.d.boxes[b]

    def _norm_word(self, box: Box) -> str:
        from archcomp.ops.registry import get_op

        op = get_op(box.op or "")
        return op.style.label if op else box.label

    def _loops(self) -> None:
        """A recurrent box carries its state to the next time step: a loop, as textbooks draw."""
        for box in list(self.d.boxes.values()):
            if box.family == "recurrent" and box.op is not None:
                state = "h, c" if box.op == "lstm" else "h"
                self.d.edges.append(Edge(box.id, box.id, state, kind="loop"))

    def _mark_residuals(self) -> None:
        succ: dict[str, list[str]] = defaultdict(list)
        preds: dict[str, list[Edge]] = defaultdict(list)
        for e in self.d.edges:
            if e.src != e.dst:
                succ[e.src].append(e.dst)
                preds[e.dst].append(e)
        reach, bit = _reachable(list(self.d.boxes), succ)
        for dst, edges in preds.items():
            box = self.d.boxes[dst]
            if box.family not in ("addnorm", "arith") or len({e.src for e in edges}) < 2:
                continue
            srcs = {e.src for e in edges}
            every = 0
            for src in srcs:
                every |= bit[src]
            for e in edges:
                mine = reach.get(e.src)
                if mine is None:  # in or before a cycle: walk the graph
                    hit = self._reaches(e.src, srcs - {e.src}, succ, stop=dst)
                else:  # a DAG: no path through dst can reach dst's predecessors
                    hit = bool(mine & every & ~bit[e.src])
                if hit:
                    e.kind = "residual"

    def _root(self, box: str) -> str | None:
        f = self.d.boxes[box].frame
        while f is not None and self.d.frames[f].parent is not None:
            f = self.d.frames[f].parent
        return f

    def _mark_cross(self) -> None:
        """An edge from one top-level frame into another (the encoder's output entering the
        decoder's cross-attention) does not rank the frames: they stand side by side."""
        for e in self.d.edges:
            a, b = self._root(e.src), self._root(e.dst)
            if a is not None and b is not None and a != b and e.kind == "data":
                e.kind = "cross"

    @staticmethod
    def _reaches(a: str, targets: set[str], succ: dict[str, list[str]], stop: str) -> bool:
        seen = {a}
        todo = [a]
        while todo:
            x = todo.pop()
            for y in succ.get(x, ()):
                if y in targets:
                    return True
                if y not in seen and y != stop:
                    seen.add(y)
                    todo.append(y)
        return False

    # -- parameter counts -----------------------------------------------------------------

    def _param_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.g.nodes.values():
            if n.shared_with is not None:
                continue
            total = 0
            for pname, shape in n.op.param_shapes(n.args).items():
                if pname in n.tie:
                    continue
                size = 1
                for d in shape:
                    size = size * d if isinstance(d, int) else 0
                total += size
            if total:
                out[n.name] = total
        return out


def _reachable(
    boxes: list[str], succ: dict[str, list[str]]
) -> tuple[dict[str, int | None], dict[str, int]]:
    """Per box, the boxes reachable from it as a bit mask (None for a box in or before a
    cycle), and each box's bit: reachability for every box in time linear in the edges."""
    bit = {b: 1 << i for i, b in enumerate(boxes)}
    indeg = dict.fromkeys(boxes, 0)
    for a in boxes:
        for b in succ.get(a, ()):
            indeg[b] = indeg.get(b, 0) + 1
    order = [b for b in boxes if indeg[b] == 0]
    for a in order:  # Kahn's algorithm; grows while it runs
        for b in succ.get(a, ()):
            indeg[b] -= 1
            if indeg[b] == 0:
                order.append(b)
    reach: dict[str, int | None] = dict.fromkeys(boxes)
    for a in reversed(order):
        mask: int | None = 0
        for b in succ.get(a, ()):
            rb = reach.get(b)
            if rb is None or mask is None:
                mask = None
                break
            mask |= bit.get(b, 0) | rb
        reach[a] = mask
    return reach, bit


def plan(g: Graph, opts: DrawOptions) -> Drawing:
    d = Planner(g, opts).plan()
    for box in d.boxes.values():
        if box.params:
            box.note = f"{st.fmt_count(box.params)} params"
    return d


def edge_segments(d: Drawing) -> int:
    """The edges as Graphviz lays them out: one segment per rank an edge crosses (dot adds
    a virtual node at each), ranks being longest-path depths; an edge in a cycle counts 1."""
    succ: dict[str, list[str]] = defaultdict(list)
    indeg: dict[str, int] = defaultdict(int)
    pairs = [(e.src, e.dst) for e in d.edges if e.src != e.dst]
    for a, b in pairs:
        succ[a].append(b)
        indeg[b] += 1
    rank = dict.fromkeys(d.boxes, 0)
    todo = [b for b in d.boxes if indeg[b] == 0]
    while todo:
        a = todo.pop()
        for b in succ[a]:
            rank[b] = max(rank[b], rank[a] + 1)
            indeg[b] -= 1
            if indeg[b] == 0:
                todo.append(b)
    return (
        sum(max(1, rank.get(b, 0) - rank.get(a, 0)) for a, b in pairs) + len(d.edges) - len(pairs)
    )


def check_size(d: Drawing, opts: DrawOptions) -> None:
    """Refuse a diagram past ``max_boxes`` boxes or ``max_edges`` edge segments: Graphviz's
    time and memory grow with both (a dense 1,000-box DAG took dot past 5.8 GB)."""
    n = len(d.boxes)
    if n > opts.max_boxes:
        raise UsageError(
            f"the diagram of '{d.name}' would have {n:,} boxes (limit {opts.max_boxes:,}); "
            "draw it with fewer expansions (--depth, --expand) or raise --max-nodes"
        )
    if len(d.edges) > opts.max_edges:  # a lower bound on the segments, known at once
        segments = len(d.edges)
    else:
        segments = edge_segments(d)
    if segments > opts.max_edges:
        raise UsageError(
            f"the diagram of '{d.name}' would have {len(d.edges):,} edges crossing "
            f"{segments:,} ranks in all (limit {opts.max_edges:,}); draw it with fewer "
            "expansions (--depth, --expand) or raise --max-edges"
        )
