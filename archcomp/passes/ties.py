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
            if pname not in own and "" in own:  # keyed by its id: its one tensor, no name
                rep.add(
                    doc.diag(
                        "bad-tie",
                        f"op '{node.op.name}' keyed by its id (key: self) has no parameter "
                        f"'{pname}', only its own tensor: tie the other node to this one",
                        path,
                        key=True,
                        node=node.name,
                        op=node.op.name,
                        hint=f"tie: {{bias: {node.name.rpartition('.')[2]}}} on the other node; "
                        f"from a block call, tie: {{{node.name.rpartition('.')[2]}: ...}}",
                    )
                )
                continue
            if pname not in own:
                what = f"parameter '{pname}'" if pname else "tensor keyed by its id (key: self)"
                rep.add(
                    doc.diag(
                        "bad-tie",
                        f"op '{node.op.name}' has no {what}",
                        path,
                        key=True,
                        node=node.name,
                        op=node.op.name,
                        hint=did_you_mean(pname, own)
                        or (f"parameters: {', '.join(own)}" if own else "it holds none"),
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
                        f"cannot tie {pname or node.name} {fmt_shape(own[pname])} to "
                        f"{tnode}{tparam and '.' + tparam} {fmt_shape(theirs[tparam])}: "
                        "shapes differ",
                        path,
                        node=node.name,
                        op=node.op.name,
                    )
                )
