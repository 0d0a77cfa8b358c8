"""Counting for a drawing: parameters per node (for ``--params``), and the edge segments and
boxes that bound what Graphviz is asked to lay out."""

from __future__ import annotations

from collections import defaultdict

from archcomp.backends.graphviz.boxes import Drawing, DrawOptions
from archcomp.base.errors import UsageError
from archcomp.ir import Graph


def param_counts(g: Graph) -> dict[str, int]:
    """Parameters per node, each tensor once: tied weights and shared nodes count nothing."""
    out: dict[str, int] = {}
    for n in g.nodes.values():
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
