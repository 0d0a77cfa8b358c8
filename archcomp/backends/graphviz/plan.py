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
- the paper's rewrites follow (:mod:`~archcomp.backends.graphviz.rewrites`): a residual add
  feeding only a norm becomes one "Add & Norm" box; dropout is not drawn; edges that bypass a
  sub-layer into its Add & Norm are marked residual.

What an op looks like comes from its ``Style`` (:mod:`archcomp.ir.drawing`); this module
names no op.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Literal

from archcomp.backends.graphviz import rewrites
from archcomp.backends.graphviz import style as st
from archcomp.backends.graphviz.boxes import DEPTH_ALL, Box, Drawing, DrawOptions, Edge, Frame
from archcomp.backends.graphviz.counts import check_size, param_counts
from archcomp.base.errors import UsageError, did_you_mean
from archcomp.ir import Graph, Node, Ref, Scope
from archcomp.ir.dims import fmt_shape
from archcomp.ir.drawing import OUTPUT_FIGURES, Figure, Part
from archcomp.ir.opdef import OpDef
from archcomp.ops.registry import all_ops, get_op
from archcomp.passes.structure import LEARNED_OPS

__all__ = ["Box", "DrawOptions", "Drawing", "Frame", "Planner", "plan", "planned"]


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


def copy_runs(g: Graph, every: Iterable[str] = ()) -> dict[str, dict[int, int]]:
    """Repeats whose copies differ in their nodes (``when: ${index == 0}``): repeat -> copy
    index -> the first copy of its run. A run is a stretch of consecutive copies with the
    same nodes (ResNet: copy 0, copies 1–3) or, where that gives fewer runs, every p-th copy
    of copies that repeat with period p (Swin's alternating shifted windows: copies 0, 2, 4
    and 1, 3, 5). Each run is drawn once; a repeat whose copies are all alike is not listed
    (copy 0 stands for all). A repeat named in ``every`` has each copy as its own run."""
    nodes: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for n in g.nodes.values():
        for s in n.scopes:
            if s.repeat is not None and s.index is not None:
                nodes[_base(s)][s.index].append(n.name[len(s.name) :])
    out: dict[str, dict[int, int]] = {}
    for base, copies in nodes.items():
        if base in every:
            out[base] = {k: k for k in copies}
            continue
        firsts = min(_stretches(copies), _periodic(copies), key=lambda f: len(set(f.values())))
        if len(set(firsts.values())) > 1:
            out[base] = firsts
    return out


def _stretches(copies: Mapping[int, list[str]]) -> dict[int, int]:
    """Copy -> the first copy of its stretch of consecutive alike copies."""
    firsts: dict[int, int] = {}
    last: list[str] | None = None
    first = 0
    for k in sorted(copies):
        if copies[k] != last:
            first, last = k, copies[k]
        firsts[k] = first
    return firsts


def _periodic(copies: Mapping[int, list[str]]) -> dict[int, int]:
    """Copy -> copy k mod p, for the smallest period p of the copies' nodes (p = the number
    of copies when they do not repeat)."""
    ks = sorted(copies)
    for p in range(1, len(ks) + 1):
        if all(copies[k] == copies.get(k - p, copies[k]) for k in ks):
            return {k: k % p for k in ks}
    return {k: k for k in ks}


def run_label(firsts: Mapping[int, int], first: int) -> str:
    """``copy 0``, ``copies 1–3 (3×)``, ``copies 0, 2, 4 (3×)``: which copies a run's frame
    stands for."""
    members = [k for k, v in firsts.items() if v == first]
    if len(members) == 1:
        return f"copy {first}"
    if members == list(range(first, members[-1] + 1)):
        return f"copies {first}–{members[-1]} ({len(members)}×)"
    return f"copies {', '.join(map(str, members))} ({len(members)}×)"


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
        self.opened: set[str] = set()  # --expand names that opened what is otherwise closed
        self.expandable: set[str] = set()  # blocks and figure ops drawn closed here
        self.d = Drawing(g.name, self._direction())
        self.item_of: dict[str, str] = {}  # canonical node -> box its inputs enter
        self.out_of: dict[str, str] = {}  # canonical node -> box its result leaves
        self.port_box: dict[tuple[str, str], str] = {}  # (canonical node, port) -> box
        self.port_more: dict[tuple[str, str], list[str]] = defaultdict(list)  # more boxes
        self.alias: dict[str, Ref] = {}  # elided node -> the ref it passes through
        self.side: dict[str, list[Ref]] = {}  # folded concat -> its other inputs
        self.figured: set[str] = set()  # nodes drawn as their op's figure
        self.collapsed_ops: dict[str, list[Node]] = defaultdict(list)
        self.collapsed_scope: dict[str, Scope] = {}
        self.edge_keys: set[tuple[str, ...]] = set()
        self.labelled: set[tuple[str, str, str]] = set()
        self.hidden_inputs = {n for n, i in g.inputs.items() if i.type.dtype == "bool"}
        self.unread = _unread_weights(g)  # not drawn: no edge would reach them
        self.lr = self.d.direction == "LR"
        self.params = param_counts(g) if opts.param_counts else {}
        self.runs = copy_runs(g, opts.copies)
        self.fold_plumbing = (opts.depth or 0) < DEPTH_ALL
        self.plumbing_blocks = self._plumbing_blocks() if self.fold_plumbing else set()
        self.folded: set[str] = set()  # plumbing blocks folded here (--expand opens them)
        self.absorbed: set[str] = set()  # nodes drawn as part of the box they feed

    def _canon(self, name: str, scopes: Iterable[Scope]) -> str:
        return _canon(name, scopes, self.runs)

    def _plumbing_blocks(self) -> set[str]:
        """The drawn block instances (not repeats) that hold only shape plumbing (Swin's
        window partition and reverse): folded into the box they serve, as their ops are."""
        every: dict[str, bool] = {}
        for n in self.g.nodes.values():
            for s in _block_scopes(n):
                if s.repeat is None:
                    sid = self._canon(s.name, n.scopes)
                    every[sid] = every.get(sid, True) and n.op.style.is_plumbing(n.args)
        return {sid for sid, only in every.items() if only}

    # -- decisions ------------------------------------------------------------------------

    def _direction(self) -> Literal["BT", "LR"]:
        if self.opts.direction != "auto":
            return self.opts.direction
        fams = {n.op.style.family for n in self.g.nodes.values()}
        residual = any(n.op.style.residual_add for n in self.g.nodes.values())
        if fams & {"conv", "pool"} and not fams & {"attention", "recurrent"} and not residual:
            return "LR"  # a plain pipeline (LeNet); residual stages (ResNet) stack upwards
        return "BT"

    def _check_expand_names(self) -> None:
        known: set[str] = {name for name, op in all_ops().items() if op.style.figure}
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

    def _named(self, s: Scope, node: Node) -> set[str]:
        """The --expand names that name scope ``s`` of ``node``."""
        c = self._canon(s.name, node.scopes)
        names = (
            {s.block, c, self._canon(_base(s), node.scopes)}
            if s.repeat is not None
            else {s.block, c}
        )
        if s.label:
            names.add(s.label)
        return names & self.expand

    def _scope_open(
        self, node: Node, i: int, forced: dict[str, set[str]], nested: set[str]
    ) -> bool:
        s = node.scopes[i]
        c = self._canon(s.name, node.scopes)
        level = sum(1 for t in node.scopes[: i + 1] if not _is_op_repeat(node, t))
        if self.opts.depth is not None:
            default = level <= self.opts.depth
        elif s.block in self.opts.collapse:
            default = False
        else:
            default = s.repeat is not None or c in nested or s.drawn_open
        if c in forced and not default:
            self.opened |= forced[c]
        return default or c in forced

    def _op_open(self, node: Node, op: str, level: int) -> bool:
        names = {op, self._canon(node.name, node.scopes)} & self.expand
        if node.label and node.label in self.expand and node.op.name == op:
            names.add(node.label)
        if self.opts.depth is not None:
            default = level <= self.opts.depth
        else:
            opdef = get_op(op)
            default = opdef is not None and opdef.style.figure_open
        if not default:
            self.opened |= names
            if not names:
                self.expandable.add(op)
        return default or bool(names)

    def _check_expand_opened(self) -> None:
        """An --expand that opened nothing (the block is drawn open already) is an error."""
        idle = sorted(self.expand - self.opened)
        if not idle:
            return
        where = (
            " at this --depth"
            if self.opts.depth is not None
            else " (repeats, blocks of blocks and blocks declaring figure: {open: true} are)"
        )
        can = (
            f"blocks and ops that --expand opens here: {', '.join(sorted(openable))}"
            if (openable := self.expandable | self.folded)
            else "nothing is drawn closed here"
        )
        raise UsageError(f"--expand {idle[0]}: already drawn open{where}; {can}")

    # -- the plan -------------------------------------------------------------------------

    def plan(self) -> Drawing:
        self._check_expand_names()
        g = self.g
        forced: dict[str, set[str]] = defaultdict(set)  # scope -> the names that open it
        nested: set[str] = set()
        for n in g.nodes.values():
            bs = [(i, s) for i, s in enumerate(n.scopes) if not _is_op_repeat(n, s)]
            for j, (_, s) in enumerate(bs):
                if j + 1 < len(bs):
                    nested.add(self._canon(s.name, n.scopes))
            for j, (_, s) in enumerate(bs):
                if names := self._named(s, n):
                    for _, outer in bs[: j + 1]:
                        forced[self._canon(outer.name, n.scopes)] |= names
        for name in g.inputs:
            if name not in self.hidden_inputs:
                self._input_box(name)
        for n in g.nodes.values():
            if self._canon(n.name, n.scopes) == n.name and n.name not in self.unread:
                self._place(n, forced, nested)
        self._finish_collapsed()
        self._check_expand_opened()
        for n in g.nodes.values():
            if n.name not in self.unread:
                self._edges_into(n)
        for oname, ref in g.outputs.items():
            self._output_box(oname, ref)
        self._rewrite()
        return self.d

    def _output_box(self, oname: str, ref: Ref) -> None:
        """The box of graph output ``oname``, after the boxes the spec's ``figure:`` declares
        for it (the Transformer's Softmax before "Output Probabilities")."""
        g = self.g
        src = self._src_box(ref)
        if src is None:
            return
        producer = g.nodes.get(self._resolve(ref).node)
        label, label_edge = st.output_label(oname, producer), self._edge_label(ref)
        after = OUTPUT_FIGURES.get(g.output_figures.get(oname, ""))
        for part in after.parts if after else ():
            pid = f"output/{oname}/{part.id}"
            self.d.boxes[pid] = Box(pid, part.label, part.family)
            self._edge(src, pid, label_edge, ("out", oname, part.id))
            src, label_edge = pid, None
        box = Box(f"output/{oname}", after.label if after else label, "io", kind="output")
        if self.lr:
            t = g.type_of(ref)
            box.caption = st.feature_maps(t.shape) if t else None
        self.d.boxes[box.id] = box
        self._edge(src, box.id, label_edge, ("out", oname))

    def _rewrite(self) -> None:
        """The paper's rewrites (:mod:`~archcomp.backends.graphviz.rewrites`)."""
        drop = rewrites.fuse_add_norm(self.d)
        for k, v in list(self.item_of.items()):
            if v in drop:
                self.item_of[k] = self.out_of[k]
        if self.lr:
            rewrites.fold_activations(self.d)
        rewrites.add_loops(self.d)
        check_size(self.d, self.opts)  # before the passes whose cost grows with edges x boxes
        rewrites.mark_residuals(self.d)
        rewrites.mark_cross(self.d)
        if self.lr:
            rewrites.wrap_rows(self.d)
        else:
            rewrites.side_residuals(self.d)
            rewrites.stage_columns(self.d)
            rewrites.fork_into_frames(self.d)  # stage columns or not: into a repeat once

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

    def _place(self, n: Node, forced: dict[str, set[str]], nested: set[str]) -> None:
        frame: str | None = None
        c = n.name
        fold = self.fold_plumbing
        for i, s in enumerate(n.scopes):
            if s.repeat is not None:
                base = self._canon(_base(s), n.scopes)
                frame = self._frame(f"repeat:{base}", "repeat", repeat_label(s), frame)
                self.d.frames[frame].count = s.repeat
                firsts = self.runs.get(_base(s))
                boxed = (  # every copy drawn, each one box: no "copy k" frame around it
                    _base(s) in self.opts.copies
                    and not _is_op_repeat(n, s)
                    and not self._scope_open(n, i, forced, nested)
                )
                if firsts is not None and s.index is not None and not boxed:
                    run = firsts[s.index]  # copies differ (or all are drawn): one per run
                    frame = self._frame(f"run:{base}.{run}", "block", run_label(firsts, run), frame)
            if _is_op_repeat(n, s):
                break
            sid = self._canon(s.name, n.scopes)
            if sid in self.plumbing_blocks and sid not in forced:
                self.folded.add(s.block)
                break  # a block of only plumbing: folded as its ops are, below
            fold = fold and sid not in self.plumbing_blocks  # --expand opened it: drawn
            if not self._scope_open(n, i, forced, nested):
                self.expandable.add(s.block)
                self.collapsed_ops[sid].append(n)
                self.collapsed_scope.setdefault(sid, s)
                if sid not in self.d.boxes:
                    self.d.boxes[sid] = Box(sid, "", "block", kind="block", frame=frame)
                self.item_of[c] = self.out_of[c] = sid
                self.d.boxes[sid].params += self.params.get(n.name, 0)
                if s.repeat is not None and _base(s) in self.opts.copies:
                    self.d.boxes[sid].caption = f"copy {s.index}"
                return
            if s.repeat is None:
                explicit = sid in forced or self.opts.depth is not None
                kind = "block" if explicit else "group"
                label = s.label or st.humanize(s.block)
                frame = self._frame(f"block:{sid}", kind, label, frame)
        family = n.op.style.family
        if n.op.style.is_plumbing(n.args) and fold and self._fold(n, c):
            return
        if fold and self._head_pick(n) and self._fold(n, c):
            return  # ViT's MLP Head reads token 0 itself
        if n.op.style.absorbed and self.fold_plumbing:
            self.absorbed.add(c)  # part of the box it feeds: no box, no edges
            return
        if family in st.ELIDED_FAMILIES and not self.opts.dropout:
            first = n.refs()[0] if n.refs() else None
            if first is not None:
                self.alias[c] = first
                return
        level = len(_block_scopes(n)) + 1
        if self._figure_of(n, n.op) is not None and self._op_open(n, n.op.name, level):
            self._figure(n, n.op, c, frame, level)
            return
        if family == "posenc":
            self._posenc(n, c, frame)
            return
        box = Box(c, st.op_label(n), family, style=n.op.style, frame=frame)
        if n.op.style.shape == "circle":
            box.kind = "circle"
        box.caption = self._caption(n)
        box.params = self.params.get(n.name, 0)
        self.d.boxes[c] = box
        self.item_of[c] = self.out_of[c] = c

    def _head_pick(self, n: Node) -> bool:
        """A [CLS] pick (``Style.head_pick_for``) whose one reader is a linear head giving a
        graph output."""
        pick = n.op.style.head_pick_for
        if pick is None or not pick(n.args):
            return False
        readers = [m for m in self.g.nodes.values() if any(r.node == n.name for r in m.refs())]
        outputs = {self._resolve(r).node for r in self.g.outputs.values()}
        return (
            len(readers) == 1
            and readers[0].op.style.family == "linear"
            and readers[0].name in outputs
        )

    def _fold(self, n: Node, c: str) -> bool:
        """Fold shape plumbing into the box it serves: its main input passes through (for an
        expand, ``x``; for a concat, the one input not from a parameter, the others entering
        the consumer beside it). False when there is no such main input."""
        if "x" in n.inputs and isinstance(n.inputs["x"], Ref):
            self.alias[c] = n.inputs["x"]
            return True
        refs = n.refs()
        if len(refs) == 1:
            self.alias[c] = refs[0]
            return True
        main = [r for r in refs if not self._from_parameters(r)]
        if len(main) != 1:
            return False
        self.alias[c] = main[0]
        self.side[c] = [r for r in refs if r is not main[0]]
        return True

    def _from_parameters(self, ref: Ref) -> bool:
        """Whether ``ref`` is (through folded plumbing) a node without inputs (a parameter)."""
        r = self._resolve(ref)
        node = self.g.nodes.get(r.node)
        return node is not None and not node.refs()

    def _caption(self, n: Node) -> str | None:
        lines = []
        detail = st.arg_detail(n)
        if n.op.style.caption_for is not None:
            detail = n.op.style.caption_for(n.args, self._ports(n)) or detail
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
        style = n.op.style
        if style.glyph is not None:
            wave = Box(
                f"{c}/wave",
                style.glyph,
                "posenc",
                kind="wave",
                style=style,
                frame=frame,
                xlabel=n.label or "\n".join(style.label.split()),  # a word per line
            )
        else:
            wave = Box(f"{c}/wave", st.op_label(n), "embedding", style=style, frame=frame)
        wave.params = self.params.get(n.name, 0)
        if not adds:
            wave.id = c
            self.d.boxes[c] = wave
            self.item_of[c] = self.out_of[c] = c
            return
        self.d.boxes[wave.id] = wave
        self.d.boxes[c] = Box(c, "+", "arith", kind="circle", style=st.PLUS, frame=frame)
        self._edge(wave.id, c, None, ("pe", c))
        self.item_of[c] = self.out_of[c] = c

    def _figure(
        self, n: Node, op: OpDef, c: str, parent: str | None, level: int, inside: Part | None = None
    ) -> dict[str, str]:
        """Draw a composite op's inside (node ``n``'s op, or the op of the part ``inside``
        its figure); returns its port -> box map (and 'out')."""
        fig = self._figure_of(n, op)
        assert fig is not None
        prefix = f"{c}/{inside.id}/" if inside else f"{c}/"
        label = inside.label if inside else st.op_label(n)
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
            text = fig.stack_label or text
            outer = self._frame(f"stack:{prefix}", "stack", text, frame)
            stack_frame = self._frame(f"stack_inner:{prefix}", "stack_inner", None, outer)
        side_frame = frame
        if fig.side_stack:
            outer = self._frame(f"side_stack:{prefix}", "stack", fig.side_stack_label, frame)
            side_frame = self._frame(f"side_inner:{prefix}", "stack_inner", None, outer)
        ports: dict[str, str] = {}
        for p in fig.parts:
            where = stack_frame if p.id in fig.stack else frame
            where = side_frame if p.id in fig.side_stack else where
            pid = f"{prefix}{p.id}"
            inner_op = get_op(p.op) if p.op is not None else None
            opens = inner_op and self._figure_of(n, inner_op)
            if inner_op and opens and self._op_open(n, inner_op.name, level + 1):
                inner = self._figure(n, inner_op, c, where, level + 1, inside=p)
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
        for port, target in fig.ports:
            box = ports.get(target) or ports[target.split(":")[0]]
            if port in out and not inside:  # the port enters several parts (x: router, experts)
                self.port_more[(c, port)].append(box)
            else:
                out[port] = box
        if not inside:
            self.figured.add(c)
            for port, box in out.items():
                if port != "out":
                    self.port_box[(c, port)] = box
            self.item_of[c] = out["query"] if "query" in out else out["out"]
            self.out_of[c] = out["out"]
        return out

    @staticmethod
    def _ports(n: Node) -> frozenset[str]:
        """The input ports of ``n`` that are connected."""
        return frozenset(p for p, r in n.inputs.items() if r is not None and r != [])

    def _figure_of(self, n: Node, op: OpDef) -> Figure | None:
        """The inside of ``op`` drawn for node ``n`` (its arguments, its connected ports)."""
        return op.style.figure_of(n.args, self._ports(n))

    def _finish_collapsed(self) -> None:
        for sid, nodes in self.collapsed_ops.items():
            s = self.collapsed_scope[sid]
            box = self.d.boxes[sid]
            if st.is_add_norm(n.op.style for n in nodes):
                box.label = s.label or rewrites.ADD_NORM
                box.family = "addnorm"
            else:
                box.label = s.label or st.humanize(s.block)
                box.family = st.block_family(n.op.style.family for n in nodes)
            if box.family == "recurrent":
                box.style = next((n.op.style for n in nodes if n.op.style.state), None)

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

    def _src_boxes(self, ref: Ref) -> list[str]:
        """The boxes an edge from ``ref`` starts at: its source, and the side inputs of the
        plumbing folded on the way (ViT's class token)."""
        out = [self._src_box(ref)]
        r = ref
        for _ in range(len(self.alias) + 1):
            node = self.g.nodes.get(r.node)
            if node is None:
                break
            c = self._canon(r.node, node.scopes)
            if c not in self.alias:
                break
            for side in self.side.get(c, ()):
                out.extend(self._src_boxes(side))
            r = self.alias[c]
        return [b for b in out if b is not None]

    def _src_box(self, ref: Ref) -> str | None:
        if ref.node in self.g.inputs:
            return None if ref.node in self.hidden_inputs else f"input/{ref.node}"
        r = self._resolve(ref)
        if r.node in self.g.inputs:
            return None if r.node in self.hidden_inputs else f"input/{r.node}"
        if r.node in self.absorbed:
            return None
        return self.out_of.get(r.node)

    def _edge_label(self, ref: Ref) -> str | None:
        parts = []
        node = self.g.nodes.get(ref.node)
        c = self._canon(ref.node, node.scopes) if node is not None else ""
        folded = c in self.alias or c in self.figured  # a figure's parts say which result
        if node is not None and len(node.op.results) > 1 and ref.result and not folded:
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
        if c in self.alias or c in self.absorbed:
            return
        copies = {_base(s): s.index for s in n.scopes if s.repeat is not None}
        for port, refs in n.inputs.items():
            for ref in refs if isinstance(refs, list) else [refs]:
                src_node = self.g.nodes.get(ref.node)
                if src_node is not None and any(
                    copies.get(_base(s), s.index) != s.index
                    and _after(self._first(s, s.index), self._first(s, copies[_base(s)]))
                    for s in src_node.scopes
                    if s.repeat is not None
                ):
                    continue  # copy k -> copy k+1 of a run (or back to an earlier run): the frame
                dst = self.port_box.get((c, port)) or self.item_of.get(c)
                held = self._resolve(ref).node
                if held in self.absorbed and n.name == c and dst is not None:
                    self.d.boxes[dst].params += self.params.pop(held, 0)  # its table, once
                for src in self._src_boxes(ref):
                    for box in [dst, *self.port_more.get((c, port), ())]:
                        if box is None or src == box:
                            continue
                        kind = self.d.boxes[box].kind
                        key = (port, c, box) if kind not in ("block",) else ()
                        self._edge(src, box, self._edge_label(ref), key)

    def _first(self, s: Scope, index: int | None) -> int | None:
        """The first copy of the run that copy ``index`` of ``s``'s repeat belongs to."""
        firsts = self.runs.get(_base(s))
        return 0 if firsts is None or index is None else firsts.get(index, 0)


def _after(src: int | None, dst: int | None) -> bool:
    """Whether an edge from a copy drawn as run ``src`` into one drawn as run ``dst`` would
    not go forward: copies of one run, or a period's last copy feeding the next period's
    first (Swin's copy 1 -> copy 2, drawn as copy 1 -> copy 0)."""
    return (src or 0) >= (dst or 0)


def planned(g: Graph, opts: DrawOptions) -> Planner:
    """Plan ``g``; the planner keeps, beside its drawing ``d``, what the HTML view reads
    (``expandable``, ``collapsed_scope``, ``collapsed_ops``)."""
    p = Planner(g, opts)
    d = p.plan()
    for box in d.boxes.values():
        if box.params:
            box.note = f"{st.fmt_count(box.params)} params"
    return p


def plan(g: Graph, opts: DrawOptions) -> Drawing:
    return planned(g, opts).d


def _unread_weights(g: Graph) -> set[str]:
    """Parameters and buffers that only absent nodes read (DINOv2's mask token without
    bool_masked_pos): weights of the model, no part of its computation."""
    read = {r.node for r in g.outputs.values()}
    for n in g.nodes.values():
        for v in n.inputs.values():
            read.update(r.node for r in (v if isinstance(v, list) else [v]))
    return {
        name
        for name in g.read_by_absent - read
        if name in g.nodes and g.nodes[name].op.name in LEARNED_OPS
    }
