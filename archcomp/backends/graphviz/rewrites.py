"""The paper's rewrites of a laid-out plan: Add & Norm boxes, "Conv + ReLU" boxes, the loop of
a recurrent box, residual and cross edges. Each reads only the boxes' ``Style`` (what the op
declares about its drawing), never an op's name.
"""

from __future__ import annotations

from collections import defaultdict

from archcomp.backends.graphviz.boxes import Box, Drawing, Edge

ADD_NORM = "Add & Norm"


def edge_index(d: Drawing) -> tuple[dict[str, list[Edge]], dict[str, list[Edge]]]:
    """Edges by source box and by destination box."""
    outs: dict[str, list[Edge]] = defaultdict(list)
    ins: dict[str, list[Edge]] = defaultdict(list)
    for e in d.edges:
        outs[e.src].append(e)
        ins[e.dst].append(e)
    return outs, ins


def fuse_add_norm(d: Drawing) -> set[str]:
    """A residual add whose one consumer is a norm that fuses with it (``Style.fuses_add``),
    fed only by it in the same frame: one Add & Norm box. Returns the ids of the dropped adds.
    An add is residual when one of its inputs reaches the other (x + sublayer(x)); a sum of
    embeddings (tokens + positions, before CLIP's or BERT's first norm) is not."""
    outs, ins = edge_index(d)
    succ = {b: [e.dst for e in es] for b, es in outs.items()}
    drop: set[str] = set()
    for box in list(d.boxes.values()):
        add = box.style
        if add is None or not add.residual_add or box.kind != "circle" or len(outs[box.id]) != 1:
            continue
        srcs = {e.src for e in ins[box.id]}
        if not any(_reaches(a, srcs - {a}, succ, box.id) for a in srcs):
            continue
        nxt = d.boxes[outs[box.id][0].dst]
        norm = nxt.style
        if norm is None or not norm.fuses_add or len(ins[nxt.id]) != 1 or nxt.frame != box.frame:
            continue
        nxt.label = ADD_NORM if nxt.label == norm.label else nxt.label  # a label: stays
        nxt.family = "addnorm"
        nxt.params += box.params
        for e in ins[box.id]:
            e.dst = nxt.id
        drop.add(box.id)
    if drop:
        d.edges = [e for e in d.edges if e.src not in drop]
        for b in drop:
            del d.boxes[b]
    return drop


def fold_activations(d: Drawing) -> None:
    """In a left-to-right pipeline an activation joins the box before it: "Conv + ReLU"."""
    outs, ins = edge_index(d)
    drop: set[str] = set()
    for box in list(d.boxes.values()):
        if box.family != "activation" or box.kind != "op" or len(ins[box.id]) != 1:
            continue
        prev = d.boxes[ins[box.id][0].src]
        if prev.kind != "op" or prev.id in drop or len(outs[prev.id]) != 1:
            continue
        prev.label = f"{prev.label} + {box.label}"
        for e in outs[box.id]:
            e.src = prev.id
        drop.add(box.id)
    d.edges = [e for e in d.edges if e.dst not in drop]
    for b in drop:
        del d.boxes[b]


def add_loops(d: Drawing) -> None:
    """A box whose op has a state (``Style.state``) carries it to the next time step: a loop
    labelled with it, as textbooks draw recurrence."""
    for box in list(d.boxes.values()):
        if box.style is not None and box.style.state is not None:
            d.edges.append(Edge(box.id, box.id, box.style.state, kind="loop"))


def mark_residuals(d: Drawing) -> None:
    """Edges that bypass a sub-layer into an Add & Norm (or a ``+``) are residual."""
    succ: dict[str, list[str]] = defaultdict(list)
    preds: dict[str, list[Edge]] = defaultdict(list)
    for e in d.edges:
        if e.src != e.dst:
            succ[e.src].append(e.dst)
            preds[e.dst].append(e)
    reach, bit = _reachable(list(d.boxes), succ)
    for dst, edges in preds.items():
        box = d.boxes[dst]
        if box.family not in ("addnorm", "arith") or len({e.src for e in edges}) < 2:
            continue
        srcs = {e.src for e in edges}
        every = 0
        for src in srcs:
            every |= bit[src]
        for e in edges:
            mine = reach.get(e.src)
            if mine is None:  # in or before a cycle: walk the graph
                hit = _reaches(e.src, srcs - {e.src}, succ, stop=dst)
            else:  # a DAG: no path through dst can reach dst's predecessors
                hit = bool(mine & every & ~bit[e.src])
            if hit:
                e.kind = "residual"


def side_residuals(d: Drawing) -> None:
    """A residual around a sub-layer drawn as a frame (Mixtral's mixture of experts) leaves
    its source and enters its sum from the side, as the Transformer paper draws residuals:
    it runs up beside the frame instead of curving in over its corner."""
    ins: dict[str, list[Edge]] = defaultdict(list)
    for e in d.edges:
        ins[e.dst].append(e)
    for e in d.edges:
        if e.kind != "residual":
            continue
        home = d.boxes[e.dst].frame
        if d.boxes[e.src].frame != home:
            continue
        inner = [
            _ancestors(d, d.boxes[o.src].frame)
            for o in ins[e.dst]
            if o.kind != "residual" and d.boxes[o.src].frame != home
        ]
        if any(home in fs[1:] or (home is None and fs) for fs in inner):
            e.side = True


def mark_cross(d: Drawing) -> None:
    """An edge from one top-level frame into another that is also fed from elsewhere (the
    encoder's output entering the decoder's cross-attention) does not rank the frames: they
    stand side by side. A frame fed only by the one before it (ResNet's stages) stacks on it."""
    feeds: dict[str, set[str | None]] = defaultdict(set)  # frame -> where its inputs come from
    for e in d.edges:
        a, b = _root(d, e.src), _root(d, e.dst)
        if b is not None and a != b:
            feeds[b].add(a if a is not None else e.src)
    for e in d.edges:
        a, b = _root(d, e.src), _root(d, e.dst)
        if a is not None and b is not None and a != b and e.kind == "data" and len(feeds[b]) > 1:
            e.kind = "cross"


def _root(d: Drawing, box: str) -> str | None:
    return _frame_root(d, d.boxes[box].frame)


def _frame_root(d: Drawing, f: str | None) -> str | None:
    while f is not None and d.frames[f].parent is not None:
        f = d.frames[f].parent
    return f


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


# A left-to-right strip is wrapped into rows so that it is at most about ASPECT times as wide
# as it is high; a box is about BOX_WIDE times as wide as a row is high.
ASPECT = 3.0
BOX_WIDE = 1.6


def wrap_rows(d: Drawing) -> None:
    """LeNet's strip, wrapped like text: a chain of boxes without frames (each box with at
    most one edge in and out) too wide for ASPECT is cut into rows of equal length, read
    left to right and top to bottom (``Drawing.rows``)."""
    if d.frames:
        return
    succ: dict[str, list[str]] = defaultdict(list)
    indeg: dict[str, int] = defaultdict(int)
    for e in d.edges:
        if e.kind != "loop":
            succ[e.src].append(e.dst)
            indeg[e.dst] += 1
    starts = [b for b in d.boxes if indeg[b] == 0]
    if (
        len(starts) != 1
        or any(len(v) > 1 for v in succ.values())
        or max(indeg.values(), default=0) > 1
    ):
        return
    chain = [starts[0]]
    while succ.get(chain[-1]):
        chain.append(succ[chain[-1]][0])
    if len(chain) != len(d.boxes):
        return
    rows = 1
    while -(-len(chain) // rows) * BOX_WIDE > ASPECT * rows:
        rows += 1
    if rows == 1:
        return
    per = -(-len(chain) // rows)
    d.rows = [tuple(chain[i : i + per]) for i in range(0, len(chain), per)]


def stage_columns(d: Drawing) -> None:
    """Stages side by side, as the papers lay them out (Swin's Figure 3, ResNet's Table 1):
    a chain of at least three stages (top-level frames that are or hold a repeat: ResNet's,
    ConvNeXt's, Swin's), stacked bottom to top, would be many times as high as wide; instead
    each stage is a column, read left to right, whose foot is on the rank of the first
    stage's. A box between two stages (ConvNeXt's downsampling) starts the column of the
    stage it feeds, the stem stands under the first column and the head on the last.

    The link from one column's top to the next one's foot runs outside every frame: from the
    top box to a point beside it (``gutter/k/top``, on its rank), down the gutter between the
    two columns to a point on the feet's rank (``gutter/k/foot``), across to a joint under
    the next column (``joint/k``) and up into it. Its pieces are ``kind="link"`` edges;
    ``Drawing.columns`` lists, left to right, the feet's rank: the first column's entry, then
    each gutter's foot and joint; ``Drawing.same_rank`` pins each gutter's top beside its
    column's top box. (The planner then runs :func:`fork_into_frames`: a box outside a
    repeat frame feeding several boxes in it enters it once, at a fork inside.)
    Each stage's repeat frame reads "×2", as Swin's Figure 3 and ResNet's Table 1 write it."""
    repeats = {f.id for f in d.frames.values() if f.kind == "repeat"}
    stages = [
        f.id
        for f in d.frames.values()
        if f.parent is None and any(_frame_root(d, r) == f.id for r in repeats)
    ]
    if len(stages) < 3 or d.direction != "BT" or d.rows:
        return
    column = _columns(d, stages)
    if column is None:
        return
    n = len(stages)
    feeds = [{e.src for e in d.edges if column[e.src] < k == column[e.dst]} for k in range(1, n)]
    entry = [e.src for e in d.edges if _root(d, e.dst) == stages[0] != _root(d, e.src)]
    if not entry or any(len(f) != 1 for f in feeds):
        return  # a stage fed from two places: no single column break
    for f in d.frames.values():  # the papers' stage counts: "×2" (Swin's Figure 3)
        if f.kind == "repeat" and f.count is not None and f.label:
            f.label = f"×{f.count}" + (" (shared)" if f.label.endswith(" (shared)") else "")
    d.columns = [entry[0]]
    for k, (src,) in enumerate(feeds, start=1):
        top, foot, joint = (Box(f"{p}/{k}", "", "joint", kind="joint") for p in _LINK)
        for b in (top, foot, joint):
            d.boxes[b.id] = b
        d.columns += [foot.id, joint.id]
        d.same_rank.append((src, top.id))
        label = None
        for e in d.edges:
            if e.src == src and column[e.dst] == k:
                e.src, label = joint.id, label or e.label
                e.label = None
        d.edges += [
            Edge(src, top.id, kind="link"),
            Edge(foot.id, top.id, label, kind="link"),
            Edge(foot.id, joint.id, kind="link"),
        ]


_LINK = ("gutter/top", "gutter/foot", "joint")


def fork_into_frames(d: Drawing) -> None:
    """A box outside a repeat frame that feeds several boxes inside it (the stage's input,
    the embedding under a Transformer's "N×" frame: its first sub-layer and the residual
    around it) enters the frame once, as the Transformer paper's Figure 1 draws it: one edge
    to a fork (``fork/<box>``) in the innermost frame holding those boxes, which feeds them,
    so no residual arrow runs along the outside of the frame (or over its label) into it."""
    outs, _ = edge_index(d)
    for src, edges in list(outs.items()):
        inside = [e for e in edges if e.kind in ("data", "residual")]
        frames = [_ancestors(d, d.boxes[e.dst].frame) for e in inside]
        if len(inside) < 2 or any(not f for f in frames):
            continue
        common = [f for f in frames[0] if all(f in fs for fs in frames[1:])]
        around = _ancestors(d, d.boxes[src].frame)
        if not common or common[0] in around:
            continue
        if not any(d.frames[f].kind == "repeat" and f not in around for f in common):
            continue  # not into a repeat from outside it (a norm feeding a figure beside it)
        fork = Box(f"fork/{src}", "", "joint", kind="joint", frame=common[0])
        d.boxes[fork.id] = fork
        label = next((e.label for e in inside if e.label), None)
        for e in inside:
            e.src, e.label = fork.id, None
        d.edges.append(Edge(src, fork.id, label, kind="link"))


def _ancestors(d: Drawing, f: str | None) -> list[str]:
    """``f`` and the frames around it, innermost first."""
    out: list[str] = []
    while f is not None:
        out.append(f)
        f = d.frames[f].parent
    return out


def _columns(d: Drawing, stages: list[str]) -> dict[str, int] | None:
    """Box -> its column: its stage's, or for a box outside the stages the number of stages
    before it (the head: the last). None where the stages are not a chain."""
    succ: dict[str, list[str]] = defaultdict(list)
    for e in d.edges:
        if e.kind != "loop":
            succ[e.src].append(e.dst)
    reach, bit = _reachable(list(d.boxes), succ)
    if any(r is None for r in reach.values()):
        return None  # a cycle: no order of stages
    after = [0] * len(stages)  # per stage, the boxes reachable from it
    column: dict[str, int] = {}
    for b in d.boxes:
        root = _root(d, b)
        if root in stages:
            k = stages.index(root)
            column[b] = k
            after[k] |= reach[b] or 0
    for b in d.boxes:
        if b not in column:
            column[b] = min(sum(1 for m in after if m & bit[b]), len(stages) - 1)
    if any(column[a] > column[b] for a in d.boxes for b in succ.get(a, ())):
        return None
    return column
