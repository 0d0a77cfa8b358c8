"""The per-node summary table (node, op, output shape, params, MACs) and its totals.

Parameters are counted on the compiled module (built on meta: nothing allocated), each tensor
once: a tied weight counts at the first node that owns it, a shared node counts nothing.
MACs follow the convention one multiply-add = one MAC, per forward, with symbolic dims set to
the spec's ``dims`` example sizes (a symbol without one counts as 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from archcomp.backends.torch.codegen import fmt_shape_comment
from archcomp.backends.torch.module import count_params, get_path
from archcomp.ir import Graph, Node, TensorType
from archcomp.ir.dims import Dim, Sym, add, substitute, to_json


@dataclass
class Row:
    """One line of the table: a node, or a collapsed block (``block`` set)."""

    name: str
    op: str
    shape: str
    shape_json: list[int | str] | None
    params: int
    macs: int
    macs_symbolic: str
    depth: int
    block: str | None = None


@dataclass
class Summary:
    name: str
    rows: list[Row]
    params: int
    trainable_params: int
    buffers: int
    macs: int
    macs_symbolic: str
    dims: dict[str, int]
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str] | None]
    node_scopes: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "buffers": self.buffers,
            "macs": self.macs,
            "macs_symbolic": self.macs_symbolic,
            "macs_convention": "one multiply-add = one MAC, per forward",
            "dims": self.dims,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "nodes": [
                {
                    "name": r.name,
                    "op": r.op,
                    "shape": r.shape_json,
                    "params": r.params,
                    "macs": r.macs,
                    "macs_symbolic": r.macs_symbolic,
                }
                for r in self.rows
            ],
        }

    def collapsed(self, depth: int | None) -> list[Row]:
        """Rows with blocks nested deeper than ``depth`` folded into one row each."""
        if depth is None:
            return list(self.rows)
        out: list[Row] = []
        open_block: Row | None = None
        for r in self.rows:
            scopes = self.node_scopes.get(r.name, ())
            if len(scopes) <= depth:
                open_block = None
                out.append(r)
                continue
            scope_name, block = scopes[depth]
            if open_block is None or open_block.name != scope_name:
                open_block = Row(scope_name, block, r.shape, r.shape_json, 0, 0, "0", depth, block)
                out.append(open_block)
            open_block.params += r.params
            open_block.macs += r.macs
            open_block.shape, open_block.shape_json = r.shape, r.shape_json
        return out

    def table(self, depth: int | None = None) -> str:
        rows = self.collapsed(depth)
        head = ("node", "op", "output shape", "params", "MACs")
        body = [
            (
                "  " * min(r.depth, 8) + r.name + (" [block]" if r.block else ""),
                r.op,
                r.shape,
                f"{r.params:,}",
                f"{r.macs:,}",
            )
            for r in rows
        ]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(5)]

        def line(cells: tuple[str, ...]) -> str:
            left = [c.ljust(w) for c, w in zip(cells[:3], widths[:3], strict=True)]
            right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:], strict=True)]
            return "  ".join([*left, *right]).rstrip()

        rule = "-" * len(line(head))
        dims = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        lines = [line(head), rule, *(line(b) for b in body), rule]
        lines.append(
            f"total: {self.params:,} params ({self.trainable_params:,} trainable), "
            f"{self.buffers:,} buffer elements, {self.macs:,} MACs per forward"
            + (f" at {dims}" if dims else "")
        )
        return "\n".join(lines)


def concrete(d: Dim, sizes: Mapping[str, int]) -> int:
    """A dim at example sizes; symbols without a size count as 1."""
    v = substitute(d, dict(sizes))
    if isinstance(v, Sym):
        v = substitute(v, {s: 1 for s in v.symbols})
    return v if isinstance(v, int) else 0


def _symbols(g: Graph) -> set[str]:
    out: set[str] = set()
    for info in g.inputs.values():
        for d in info.type.shape:
            if isinstance(d, Sym):
                out |= {s for s in d.symbols if s.isidentifier()}
    return out


def node_macs(node: Node, g: Graph) -> Dim:
    if node.op.macs is None or not node.outputs:
        return 0
    ins: dict[str, Any] = {}
    for port, refs in node.inputs.items():
        ins[port] = [g.type_of(r) for r in refs] if isinstance(refs, list) else g.type_of(refs)
    return node.op.macs(node.args, ins, node.outputs)


def _scope_keys(node: Node) -> tuple[tuple[str, str], ...]:
    """Collapsible levels of a node: each block instance, with a repeat's copies grouped."""
    keys: list[tuple[str, str]] = []
    for s in node.scopes:
        if s.repeat is not None and s.index is not None:
            keys.append((s.name.rsplit(".", 1)[0], f"{s.block} x{s.repeat}"))
            if s.name == node.name:  # a repeated op: the copy is the node itself
                continue
        keys.append((s.name, s.block))
    return tuple(keys)


def summarize(g: Graph, model: nn.Module) -> Summary:
    sizes = {s: g.dims.get(s, 1) for s in sorted(_symbols(g))}
    sizes.update(g.dims)
    seen: set[int] = set()
    rows: list[Row] = []
    total_macs: Dim = 0
    meta: Mapping[str, Any] = getattr(model, "node_meta", {})
    scopes: dict[str, tuple[tuple[str, str], ...]] = {}
    for node in g.nodes.values():
        path = meta.get(node.name, {}).get("module")
        params = 0
        if path is not None:
            for p in get_path(model, path).parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params += p.numel()
        macs = node_macs(node, g)
        total_macs = add(total_macs, macs)
        first: TensorType | None = next(iter(node.outputs.values()), None)
        rows.append(
            Row(
                node.name,
                node.op.name,
                fmt_shape_comment(first.shape) if first else "?",
                [to_json(d) for d in first.shape] if first else None,
                params,
                concrete(macs, sizes),
                str(macs),
                len(node.scopes),
            )
        )
        scopes[node.name] = _scope_keys(node)
    return Summary(
        g.name,
        rows,
        count_params(model),
        count_params(model, trainable_only=True),
        sum(b.numel() for b in model.buffers()),
        concrete(total_macs, sizes),
        str(total_macs),
        sizes,
        {n: i.type.to_json() for n, i in g.inputs.items()},
        {n: t.to_json() if t else None for n, t in g.output_types.items()},
        scopes,
    )
