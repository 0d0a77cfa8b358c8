"""Weight tying: a node's parameter reuses another node's, with equal shapes."""

from __future__ import annotations

from archcomp.base.errors import Reporter, did_you_mean
from archcomp.ir import Graph
from archcomp.ir.dims import fmt_shape


def check_ties(g: Graph, rep: Reporter) -> None:
    for node in g.nodes.values():
        if not node.tie or not node.outputs:
            continue
        own = node.op.param_shapes(node.args)
        for pname, (tnode, tparam) in node.tie.items():
            path = (*node.origin.path, "tie", pname)
            doc = node.origin.doc
            if pname not in own:
                rep.add(
                    doc.diag(
                        "bad-tie",
                        f"op '{node.op.name}' has no parameter '{pname}'",
                        path,
                        key=True,
                        node=node.name,
                        op=node.op.name,
                        hint=did_you_mean(pname, own) or f"parameters: {', '.join(own)}",
                    )
                )
                continue
            target = g.nodes.get(tnode)
            if target is None or not target.outputs:
                continue
            theirs = target.op.param_shapes(target.args)
            if tparam not in theirs:
                rep.add(
                    doc.diag(
                        "bad-tie",
                        f"node '{tnode}' ({target.op.name}) has no parameter '{tparam}'",
                        path,
                        node=node.name,
                        op=node.op.name,
                        hint=did_you_mean(tparam, theirs),
                    )
                )
                continue
            if tuple(own[pname]) != tuple(theirs[tparam]):
                rep.add(
                    doc.diag(
                        "bad-tie",
                        f"cannot tie {pname} {fmt_shape(own[pname])} to "
                        f"{tnode}{tparam and '.' + tparam} {fmt_shape(theirs[tparam])}: "
                        "shapes differ",
                        path,
                        node=node.name,
                        op=node.op.name,
                    )
                )
