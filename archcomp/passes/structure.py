"""Graph checks: cycles, unreachable nodes, unused nodes and inputs; then the nodes in
topological order.

The common case, a graph without a cycle, needs only the adjacency of the data flow and one
pass of Kahn's algorithm (linear in nodes and references). networkx, a tenth of a second to
import, is imported only to report the cycles of a graph that has some."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import TYPE_CHECKING

from archcomp.base.errors import Reporter
from archcomp.ir import Graph

if TYPE_CHECKING:
    import networkx as nx

MAX_CYCLES = 5
Adjacency = dict[str, dict[str, None]]  # vertex -> its neighbours, in order, each once


def flow(g: Graph) -> tuple[Adjacency, Adjacency]:
    """The data flow's successors and predecessors: an edge for every reference, inputs and
    nodes as vertices."""
    succs: Adjacency = {n: {} for n in (*g.inputs, *g.nodes)}
    preds: Adjacency = {n: {} for n in succs}
    for node in g.nodes.values():
        for ref in node.refs():
            succs.setdefault(ref.node, {})[node.name] = None
            preds.setdefault(node.name, {})[ref.node] = None
            preds.setdefault(ref.node, {})
    return succs, preds


def build_nx(g: Graph) -> nx.DiGraph:
    """The data-flow graph as networkx's, for the cycle reports."""
    import networkx as nx

    G = nx.DiGraph()
    G.add_nodes_from(g.inputs, kind="input")
    G.add_nodes_from(g.nodes, kind="node")
    for node in g.nodes.values():
        for ref in node.refs():
            G.add_edge(ref.node, node.name)
    return G


def check_structure(g: Graph, rep: Reporter) -> bool:
    """Report cycles, unreachable and unused nodes, then put ``g.nodes`` in topological order;
    False (order unchanged) if shapes cannot be inferred."""
    succs, preds = flow(g)
    order = topological(g, succs, preds)
    if len(order) < len(g.nodes):  # the nodes on or after a cycle never become ready
        _report_cycles(g, rep)
        return False
    seen_origins: set[tuple[str, tuple[object, ...]]] = set()  # one report per written node
    _report_unreachable(g, succs, rep, seen_origins)
    live = _reach({r.node for r in g.outputs.values()}, preds)
    _report_unused(g, live, rep, seen_origins)
    g.nodes = {n: g.nodes[n] for n in order}
    return True


def _reach(sources: Iterable[str], edges: Adjacency) -> set[str]:
    """``sources`` and every vertex reached from them along ``edges``."""
    seen = set(sources)
    todo = list(seen)
    while todo:
        for m in edges.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def _report_cycles(g: Graph, rep: Reporter) -> bool:
    """Report up to :data:`MAX_CYCLES` cycles, each from the node written first; whether
    there is one."""
    import networkx as nx

    G = build_nx(g)
    cycles = []
    if not nx.is_directed_acyclic_graph(G):
        for comp in nx.strongly_connected_components(G):
            if len(comp) > 1 or any(G.has_edge(n, n) for n in comp):
                cycles.append(comp)
    for comp in cycles[:MAX_CYCLES]:
        cycle = [u for u, _ in nx.find_cycle(G.subgraph(comp))]
        start = min(cycle, key=lambda n: g.nodes[n].origin.path if n in g.nodes else ())
        i = cycle.index(start)
        cycle = cycle[i:] + cycle[:i]
        node = g.nodes[start]
        text = " -> ".join([*cycle, start])
        rep.add(
            node.origin.doc.diag(
                "cycle",
                f"the graph has a cycle: {text}",
                (*node.origin.path, "in"),
                node=start,
                op=node.op.name,
                hint="a node cannot depend on its own output",
            )
        )
    return bool(cycles)


def _report_unreachable(
    g: Graph, succs: Adjacency, rep: Reporter, seen_origins: set[tuple[str, tuple[object, ...]]]
) -> None:
    """Report the nodes no input reaches."""
    # Data starts at the inputs and at ops that read nothing (a learned ``parameter``).
    sources = [*g.inputs, *(n for n, node in g.nodes.items() if not node.op.inputs)]
    reachable = _reach(sources, succs)
    for name in g.nodes:
        if name not in reachable:
            node = g.nodes[name]
            key = (node.origin.doc.file, node.origin.path)
            if key not in seen_origins:
                seen_origins.add(key)
                rep.add(
                    node.origin.doc.diag(
                        "unreachable",
                        "node does not depend on any input",
                        (*node.origin.path, "id"),
                        node=name,
                        op=node.op.name,
                    )
                )


# ops that hold a tensor of the model's state and read nothing: kept when only absent nodes
# read them (DINOv2's mask token without the bool_masked_pos input), as transformers keeps them
LEARNED_OPS = frozenset({"parameter", "buffer"})


def _report_unused(
    g: Graph, live: set[str], rep: Reporter, seen_origins: set[tuple[str, tuple[object, ...]]]
) -> None:
    """Report the nodes and inputs no output depends on (``live``: those some output does)."""
    tied = {t for node in g.nodes.values() if node.name in live for t, _ in node.tie.values()}
    for name, node in g.nodes.items():
        held = name in g.read_by_absent | tied or getattr(node.args, "unused", False)
        if name in live or (held and node.op.name in LEARNED_OPS):
            continue  # a learned tensor read only by absent nodes, a live node's tie, or held
            # for the state dict (unused: true) stays
        key = (node.origin.doc.file, node.origin.path)
        if key in seen_origins:
            continue
        seen_origins.add(key)
        rep.add(
            node.origin.doc.diag(
                "unused-node",
                "node is never used: no output depends on it",
                (*node.origin.path, "id"),
                node=name,
                op=node.op.name,
                hint="its readers are absent ('when' false or 'repeat: 0'): make it absent "
                "under the same condition"
                if name in g.read_by_absent
                else "use it, list it under 'outputs', or delete it",
            )
        )
    for name, info in g.inputs.items():
        # an input read only by absent nodes is used under other params: the forward keeps it
        if name not in live and name not in g.read_by_absent:
            rep.add(
                info.origin.doc.diag(
                    "unused-input", f"input '{name}' is never used", info.origin.path, key=True
                )
            )


def topological(g: Graph, succs: Adjacency, preds: Adjacency) -> list[str]:
    """Kahn's algorithm; among ready nodes the one written first goes first (deterministic).
    The nodes on a cycle, and those after one, are left out."""
    order = g.written_order
    indegree = {n: sum(1 for p in preds[n] if p in g.nodes) for n in g.nodes}
    ready = [(order.get(n, 0), n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, n = heapq.heappop(ready)
        out.append(n)
        for s in succs[n]:
            indegree[s] -= 1
            if indegree[s] == 0:
                heapq.heappush(ready, (order.get(s, 0), s))
    return out
