"""The summary: per node and per block, output shape, parameters, memory, activations, MACs.

Parameters are counted on the compiled module (built on meta: nothing allocated), each tensor
once: a tied weight counts at the first node that owns it (the tying node is marked), a shared
node counts nothing. Memory is in the build dtype; the training step adds gradients, optimizer
state and activations (see :mod:`archcomp.backends.torch.memory`). MACs follow the convention
one multiply-add = one MAC, per forward, with symbolic dims set to the spec's ``dims`` example
sizes (a symbol without one counts as 1).

:meth:`Summary.rows_at` folds the node rows into a tree: an open block is a row with its
subtotal followed by its contents, a block nested deeper than ``depth`` is one row, and a
repeated block whose copies are all folded is one ``96x`` row. The text (rich), HTML
(notebooks) and JSON views all show those rows, in human units (k/M/G/T, KiB/MiB/GiB)
except JSON, which keeps the exact integers.
"""

from __future__ import annotations

import html
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from torch import nn

from archcomp.backends.torch.codegen import fmt_shape_comment
from archcomp.backends.torch.devices import dtype_name, resolve_dtype
from archcomp.backends.torch.memory import (
    OPTIMIZERS,
    PerRank,
    concrete,
    optimizer_bytes,
    per_rank,
    trace_activations,
)
from archcomp.backends.torch.module import get_path
from archcomp.base.errors import UsageError
from archcomp.base.units import fmt_bytes, fmt_count
from archcomp.ir import Graph, Node, TensorType
from archcomp.ir.dims import Dim, DimTooLarge, Sym, add, to_json

JSON_FORMAT_VERSION = 1


@dataclass
class Row:
    """One line of the table: a node, an open or folded block, or a folded repeat."""

    name: str
    op: str
    shape: str
    shape_json: list[int | str] | None
    parameters: int
    param_bytes: int
    buffer_bytes: int
    activation_bytes: int | None
    macs: int
    macs_symbolic: str
    depth: int  # nesting level in the folded table (0: top level)
    kind: str = "node"  # node | block | repeat
    block: str | None = None  # the block's name (kind block or repeat)
    count: int = 1  # copies, for kind repeat
    folded: bool = False  # a block or repeat whose contents are not listed after it
    tied: tuple[str, ...] = ()  # "weight = wte.weight": weights this row uses, owned elsewhere

    @property
    def memory_bytes(self) -> int:
        return self.param_bytes + self.buffer_bytes

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "op": self.op,
            "depth": self.depth,
            "shape": self.shape_json,
            "parameters": self.parameters,
            "params": self.parameters,  # deprecated: the count's old name (until 0.3)
            "param_bytes": self.param_bytes,
            "buffer_bytes": self.buffer_bytes,
            "activation_bytes": self.activation_bytes,
            "macs": self.macs,
            "macs_symbolic": self.macs_symbolic,
        }
        if self.kind != "node":
            out.update(block=self.block, folded=self.folded)
        if self.kind == "repeat":
            out["count"] = self.count
        if self.tied:
            out["tied"] = list(self.tied)
        return out


@dataclass(frozen=True)
class Level:
    """One enclosing level of a node: a block instance, a repeat, or one copy of a repeat."""

    name: str
    block: str
    kind: str  # block | repeat | copy
    count: int = 1


@dataclass(repr=False)
class Summary:
    """What :func:`archcomp.summary` returns; ``print`` it, or show it in a notebook."""

    name: str
    rows: list[Row]  # one per node, in graph order
    parameters: int
    trainable_parameters: int
    tied_parameters: int  # elements of weights used by more than one node, counted once
    ties: dict[str, str]  # "lm_head.weight" -> "wte.weight"
    buffers: int
    dtype: str
    param_bytes: int
    buffer_bytes: int
    grad_bytes: int
    optimizer: str
    optimizer_bytes: int
    activation_bytes: int | None
    checkpointing: bool
    macs: int
    macs_symbolic: str
    dims: dict[str, int]
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str] | None]
    hyperparams: dict[str, Any]  # the params the spec was built with
    node_levels: dict[str, tuple[Level, ...]] = field(default_factory=dict)
    per_rank: PerRank | None = None  # FSDP over world_size ranks, when asked for

    @property
    def params(self) -> int:
        """Deprecated (until 0.3): the parameter count, now :attr:`parameters`."""
        warnings.warn(
            "Summary.params is deprecated; use Summary.parameters (the count) or "
            "Summary.hyperparams (the spec's params)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.parameters

    @property
    def non_trainable_parameters(self) -> int:
        return self.parameters - self.trainable_parameters

    @property
    def training_bytes(self) -> int | None:
        """Parameters, buffers, gradients, optimizer state and activations of one step."""
        if self.activation_bytes is None:
            return None
        fixed = self.param_bytes + self.buffer_bytes + self.grad_bytes + self.optimizer_bytes
        return fixed + self.activation_bytes

    def rows_at(self, depth: int | None = 1) -> list[Row]:
        """The table's rows with blocks nested deeper than ``depth`` folded (None: every node
        listed, each block as a row with its subtotal before its contents)."""
        out: list[Row] = []
        _emit(_tree(self.rows, self.node_levels), 0, depth, out)
        return out

    def table(self, depth: int | None = 1, width: int | None = None) -> str:
        """The summary as plain text, as ``archcomp summary`` prints it."""
        return text(self, depth, width)

    def to_json(self, depth: int | None = None) -> dict[str, Any]:
        return as_json(self, depth)

    def _repr_html_(self) -> str:
        return html_table(self, 1)

    def __repr__(self) -> str:
        return self.table(1)


@dataclass
class _Group:
    level: Level
    items: list[_Group | Row] = field(default_factory=list)


def _tree(rows: list[Row], levels: Mapping[str, tuple[Level, ...]]) -> list[_Group | Row]:
    top: list[_Group | Row] = []
    path: list[_Group] = []
    for r in rows:
        lv = levels.get(r.name, ())
        k = 0
        while k < len(path) and k < len(lv) and path[k].level == lv[k]:
            k += 1
        del path[k:]
        for level in lv[k:]:
            g = _Group(level)
            (path[-1].items if path else top).append(g)
            path.append(g)
        (path[-1].items if path else top).append(r)
    return top


def _leaves(item: _Group | Row) -> list[Row]:
    if isinstance(item, Row):
        return [item]
    return [r for it in item.items for r in _leaves(it)]


def _group_row(g: _Group, depth: int, folded: bool) -> Row:
    leaves = _leaves(g)
    last = leaves[-1]
    acts = [r.activation_bytes for r in leaves]
    lv = g.level
    return Row(
        lv.name,
        f"{lv.count}x {lv.block}" if lv.kind == "repeat" else lv.block,
        last.shape,
        last.shape_json,
        sum(r.parameters for r in leaves),
        sum(r.param_bytes for r in leaves),
        sum(r.buffer_bytes for r in leaves),
        None if None in acts else sum(a or 0 for a in acts),
        sum(r.macs for r in leaves),
        "",
        depth,
        "repeat" if lv.kind == "repeat" else "block",
        lv.block,
        lv.count,
        folded,
        tuple(t for r in leaves for t in r.tied),
    )


def _emit(items: list[_Group | Row], level: int, depth: int | None, out: list[Row]) -> None:
    for it in items:
        if isinstance(it, Row):
            out.append(replace(it, depth=level))
            continue
        fold = depth is not None and level >= depth
        if it.level.kind == "repeat" and depth is not None and level + 1 >= depth:
            # every copy would be one folded row: the repeat is one "96x block" row
            fold = fold or all(isinstance(c, _Group) for c in it.items)
        out.append(_group_row(it, level, fold))
        if not fold:
            _emit(it.items, level + 1, depth, out)


def _symbols(g: Graph) -> set[str]:
    out: set[str] = set()
    for info in g.inputs.values():
        for d in info.type.shape:
            if isinstance(d, Sym):
                out |= {s for s in d.symbols if s.isidentifier()}
    return out


def node_macs(node: Node, g: Graph, sizes: Mapping[str, int] | None = None) -> Dim:
    if node.op.macs is None or not node.outputs:
        return 0
    ins: dict[str, Any] = {}
    for port, refs in node.inputs.items():
        ins[port] = [g.type_of(r) for r in refs] if isinstance(refs, list) else g.type_of(refs)
    try:
        return node.op.macs(node.args, ins, node.outputs)
    except DimTooLarge:  # a formula too large to keep symbolic: its value at the example sizes

        def at(t: Any) -> Any:
            if isinstance(t, list):
                return [at(x) for x in t]
            if t is None:
                return None
            return replace(t, shape=tuple(concrete(d, sizes or {}) for d in t.shape))

        outs = {k: at(t) for k, t in node.outputs.items()}
        return node.op.macs(node.args, {k: at(t) for k, t in ins.items()}, outs)


def _levels(node: Node) -> tuple[Level, ...]:
    """The enclosing levels of a node: each block instance, a repeat around its copies."""
    out: list[Level] = []
    for s in node.scopes:
        if s.repeat is not None and s.index is not None:
            out.append(Level(s.name.rsplit(".", 1)[0], s.block, "repeat", s.repeat))
            if s.name == node.name:  # a repeated op: the copy is the node itself
                continue
            out.append(Level(s.name, s.block, "copy"))
        else:
            out.append(Level(s.name, s.block, "block"))
    return tuple(out)


def summarize(
    g: Graph,
    model: nn.Module | None = None,
    *,
    dtype: Any = None,
    optimizer: str = "adamw",
    checkpointing: bool = False,
    world_size: int | None = None,
) -> Summary:
    """The summary of ``g``; ``model`` is its build on meta (compiled here when not given or
    not on meta: the activation trace must not allocate). ``world_size``: add the per-rank
    figures of FSDP over that many ranks (:func:`archcomp.backends.torch.memory.per_rank`)."""
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer '{optimizer}'; choose {', '.join(OPTIMIZERS)}")
    if world_size is not None and (
        isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1
    ):
        raise UsageError(f"world size must be a positive int, found {world_size!r}")
    dt = resolve_dtype(dtype)
    if model is None or any(p.device.type != "meta" for p in model.parameters()):
        from archcomp.backends.torch.build import build_graph

        model = build_graph(g, device="meta", dtype=dt)
    sizes = {s: g.dims.get(s, 1) for s in sorted(_symbols(g))}
    sizes.update(g.dims)
    try:
        trace = trace_activations(model, g, sizes, dt)
        per_node: dict[str, int] | None = trace.per_node
        activations: int | None = trace.checkpointed() if checkpointing else trace.total
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        # an op whose lowering cannot run on meta tensors: the rest stands, activations "?"
        per_node, activations = None, None
    owner: dict[int, str] = {}
    rows: list[Row] = []
    total_macs: Dim = 0
    meta: Mapping[str, Any] = getattr(model, "node_meta", {})
    levels: dict[str, tuple[Level, ...]] = {}
    ties: dict[str, str] = {}
    tied_elements = 0
    for node in g.nodes.values():
        path = meta.get(node.name, {}).get("module")
        params = pbytes = bbytes = 0
        tied: list[str] = []
        if path is not None:
            mod = get_path(model, path)
            for pname, p in mod.named_parameters():
                if id(p) not in owner:
                    owner[id(p)] = f"{path}.{pname}"
                    params += p.numel()
                    pbytes += p.numel() * p.element_size()
                elif node.shared_with is None or pname in node.tie:
                    tied.append(f"{pname} = {owner[id(p)]}")
                    ties[f"{node.name}.{pname}"] = owner[id(p)]
                    tied_elements += p.numel()
            if node.shared_with is None:
                bbytes = sum(b.numel() * b.element_size() for b in mod.buffers())
            else:
                tied.append(f"shares {node.shared_with}")
                n = sum(p.numel() for p in mod.parameters())
                tied_elements += n
                ties[node.name] = node.shared_with
        macs = node_macs(node, g, sizes)
        total_macs = add(total_macs, macs)
        first: TensorType | None = next(iter(node.outputs.values()), None)
        rows.append(
            Row(
                node.name,
                node.op.name,
                fmt_shape_comment(first.shape) if first else "?",
                [to_json(d) for d in first.shape] if first else None,
                params,
                pbytes,
                bbytes,
                per_node.get(node.name, 0) if per_node is not None else None,
                concrete(macs, sizes),
                str(macs),
                len(node.scopes),
                tied=tuple(tied),
            )
        )
        levels[node.name] = _levels(node)
    plist = list(model.parameters())
    trainable = [p for p in plist if p.requires_grad]
    param_bytes = sum(p.numel() * p.element_size() for p in plist)
    return Summary(
        name=g.name,
        rows=rows,
        parameters=sum(p.numel() for p in plist),
        trainable_parameters=sum(p.numel() for p in trainable),
        tied_parameters=tied_elements,
        ties=ties,
        buffers=sum(b.numel() for b in model.buffers()),
        dtype=dtype_name(dt),
        param_bytes=param_bytes,
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        grad_bytes=sum(p.numel() * p.element_size() for p in trainable),
        optimizer=optimizer,
        optimizer_bytes=optimizer_bytes(optimizer, plist),
        activation_bytes=activations,
        checkpointing=checkpointing,
        macs=concrete(total_macs, sizes),
        macs_symbolic=str(total_macs),
        dims=sizes,
        inputs={n: i.type.to_json() for n, i in g.inputs.items()},
        outputs={n: t.to_json() if t else None for n, t in g.output_types.items()},
        hyperparams=dict(g.params),
        node_levels=levels,
        per_rank=None
        if world_size is None
        else per_rank(model, optimizer, world_size, activations),
    )


# The views: a rich table (terminals, plain text), an HTML table (notebooks), JSON.

COLUMNS = ("node", "op", "output shape", "params", "memory", "activations", "MACs")
OPTIMIZER_NOTES = {
    "adamw": "adamw: two moments per parameter and a step per tensor",
    "sgd": "sgd with momentum: one buffer per parameter",
    "none": "no optimizer state",
}


def _dash(n: int, fmt: Any = fmt_count) -> str:
    return "-" if n == 0 else str(fmt(n))


def _op_cell(r: Row) -> str:
    op = f"{r.op} (block)" if r.kind == "block" else r.op
    if r.kind == "node" and r.tied:
        return f"{op} (tied: {', '.join(t.split(' = ')[-1] for t in r.tied)})"
    return f"{op} (has tied weights)" if r.tied else op


def _cells(r: Row) -> tuple[str, ...]:
    acts = "?" if r.activation_bytes is None else _dash(r.activation_bytes, fmt_bytes)
    params = "tied" if r.parameters == 0 and r.tied and r.kind == "node" else _dash(r.parameters)
    return (
        "  " * r.depth + r.name,
        _op_cell(r),
        r.shape,
        params,
        _dash(r.memory_bytes, fmt_bytes),
        acts,
        _dash(r.macs),
    )


def _at(s: Summary) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.dims.items())


def totals(s: Summary) -> list[tuple[str, str, str]]:
    """The lines under the table: (label, value, note)."""
    at = f" at {_at(s)}" if s.dims else ""
    tie_note = "; ".join(f"{a} = {b}" for a, b in s.ties.items())
    lines = [
        ("parameters", fmt_count(s.parameters), "" if s.parameters < 1000 else f"{s.parameters:,}"),
        ("  trainable", fmt_count(s.trainable_parameters), ""),
        ("  non-trainable", fmt_count(s.non_trainable_parameters), ""),
        (
            "  tied",
            fmt_count(s.tied_parameters),
            f"counted once: {tie_note}" if tie_note else "",
        ),
        (f"memory ({s.dtype})", fmt_bytes(s.param_bytes + s.buffer_bytes), ""),
        ("  parameters", fmt_bytes(s.param_bytes), ""),
        ("  buffers", fmt_bytes(s.buffer_bytes), f"{s.buffers:,} elements" if s.buffers else ""),
    ]
    training = s.training_bytes
    acts = "?" if s.activation_bytes is None else fmt_bytes(s.activation_bytes)
    how = "kept for backward in one training forward" + at
    if s.checkpointing:
        how += ", repeated blocks checkpointed"
    lines += [
        ("training step", "?" if training is None else fmt_bytes(training), "all of the below"),
        ("  gradients", fmt_bytes(s.grad_bytes), ""),
        ("  optimizer state", fmt_bytes(s.optimizer_bytes), OPTIMIZER_NOTES[s.optimizer]),
        ("  activations", acts, how),
        ("MACs", fmt_count(s.macs), f"per forward{at}"),
    ]
    r = s.per_rank
    if r is not None:
        unit = r.largest_unit or "the root"
        lines += [
            (
                f"per rank (FSDP, world size {r.world_size})",
                "?" if r.training_bytes is None else fmt_bytes(r.training_bytes),
                "all of the below",
            ),
            ("  parameters", fmt_bytes(r.param_bytes), "sharded"),
            ("  buffers", fmt_bytes(r.buffer_bytes), "replicated"),
            ("  gradients", fmt_bytes(r.grad_bytes), "sharded"),
            ("  optimizer state", fmt_bytes(r.optimizer_bytes), "sharded"),
            ("  activations", acts, "the rank's own batch" + at),
            (
                "  unsharded unit",
                fmt_bytes(2 * r.unit_param_bytes),
                f"parameters and gradients of {unit} while it runs",
            ),
        ]
    return lines


def renderable(s: Summary, depth: int | None = 1, max_rows: int | None = None) -> RenderableType:
    """The table and totals; past ``max_rows`` rows the rest is counted, not listed."""
    rows = s.rows_at(depth)
    hidden = 0
    if max_rows is not None and len(rows) > max_rows:
        hidden, rows = len(rows) - max_rows, rows[:max_rows]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="right" if i >= 3 else "left", no_wrap=i != 1)
    for r in rows:
        style = "bold" if r.kind != "node" and not r.folded else None
        table.add_row(*_cells(r), style=style)
    if hidden:
        table.add_row(Text(f"… {hidden:,} more rows", style="dim"), *[""] * (len(COLUMNS) - 1))
    grid = Table.grid(padding=(0, 2))
    grid.add_column()
    grid.add_column(justify="right")
    grid.add_column(style="dim")
    for label, value, note in totals(s):
        grid.add_row(Text(label, style="bold" if not label.startswith(" ") else ""), value, note)
    parts: list[RenderableType] = [table, Text(""), grid]
    if any(r.folded for r in rows):
        note = f"blocks deeper than depth {depth} are folded; --depth all lists every node"
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def text(s: Summary, depth: int | None = 1, width: int | None = None) -> str:
    """Plain text (no colour) at ``width`` columns, or as wide as the table needs."""
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width or 10_000,
        color_system=None,
        force_terminal=False,
        force_jupyter=False,
        highlight=False,
        emoji=False,
    )
    console.print(renderable(s, depth))
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()).strip("\n")


def as_json(s: Summary, depth: int | None = None) -> dict[str, Any]:
    """The ``--json`` object (see docs/compiler.md, "Summary JSON")."""
    return {
        "format_version": JSON_FORMAT_VERSION,
        "name": s.name,
        "params": s.hyperparams,
        "dtype": s.dtype,
        "parameters": s.parameters,
        "trainable_parameters": s.trainable_parameters,
        "non_trainable_parameters": s.non_trainable_parameters,
        "tied_parameters": s.tied_parameters,
        "ties": s.ties,
        "trainable_params": s.trainable_parameters,  # deprecated (until 0.3)
        "buffers": s.buffers,
        "memory": {
            "param_bytes": s.param_bytes,
            "buffer_bytes": s.buffer_bytes,
            "grad_bytes": s.grad_bytes,
            "optimizer": s.optimizer,
            "optimizer_bytes": s.optimizer_bytes,
            "activation_bytes": s.activation_bytes,
            "activation_checkpointing": s.checkpointing,
            "training_bytes": s.training_bytes,
            **({} if s.per_rank is None else {"per_rank": s.per_rank.to_json()}),
        },
        "macs": s.macs,
        "macs_symbolic": s.macs_symbolic,
        "macs_convention": "one multiply-add = one MAC, per forward",
        "dims": s.dims,
        "inputs": s.inputs,
        "outputs": s.outputs,
        "depth": "all" if depth is None else depth,
        "nodes": [r.to_json() for r in s.rows_at(depth)],
    }


def html_table(s: Summary, depth: int | None = 1) -> str:
    """An HTML table for notebooks (``Summary._repr_html_``), folded as the CLI folds."""
    e = html.escape
    head = "".join(
        f'<th style="text-align:{"right" if i >= 3 else "left"}">{e(c)}</th>'
        for i, c in enumerate(COLUMNS)
    )
    body = []
    for r in s.rows_at(depth):
        cells = _cells(r)
        weight = "font-weight:bold;" if r.kind != "node" and not r.folded else ""
        tds = [
            f'<td style="text-align:left;padding-left:{0.3 + 1.2 * r.depth:.1f}em;{weight}">'
            f"{e(r.name)}</td>"
        ]
        tds += [
            f'<td style="text-align:{"right" if i >= 3 else "left"};{weight}">{e(c)}</td>'
            for i, c in enumerate(cells[1:], start=1)
        ]
        body.append("<tr>" + "".join(tds) + "</tr>")
    foot = "".join(
        f'<tr><td style="text-align:left">{e(label.strip())}</td>'
        f'<td style="text-align:right">{e(value)}</td>'
        f'<td style="text-align:left" colspan="5">{e(note)}</td></tr>'
        for label, value, note in totals(s)
    )
    return (
        f'<table class="archcomp-summary"><caption>{e(s.name)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
        f"<tfoot>{foot}</tfoot></table>"
    )
