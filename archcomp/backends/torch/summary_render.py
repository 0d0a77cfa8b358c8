"""The summary's views: a rich table (terminals, plain text), an HTML table (notebooks) and
JSON, all showing the folded rows (:meth:`SummaryData.rows_at`) in human units (k/M/G/T,
KiB/MiB/GiB) except JSON, which keeps the exact integers. A row whose activations are its
outputs' size (its op cannot run on meta tensors and declares no activation rule) shows them
with a "?".
"""

from __future__ import annotations

import html
import io
from typing import Any, Literal

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from archcomp.backends.torch.summary_fold import Row, SummaryData
from archcomp.base.units import fmt_bytes, fmt_count

JSON_FORMAT_VERSION = 1

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
    if r.activation_bytes is not None and r.activation_source == "output":
        acts += "?"  # its outputs' size: what the op keeps is unknown
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


def _at(s: SummaryData) -> str:
    at = ", ".join(f"{k}={v}" for k, v in s.dims.items())
    if s.unset_dims:  # said, not silently 1
        them = "it" if len(s.unset_dims) == 1 else "them"
        at += f" ({', '.join(s.unset_dims)} not set, so 1; --dims or dims= sets {them})"
    return at


def totals(s: SummaryData) -> list[tuple[str, str, str]]:
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
    how += _estimates(s)
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


def _estimates(s: SummaryData) -> str:
    """The note on nodes the meta forward could not run (data-dependent ops)."""
    how = list(s.activation_estimates.values())
    parts = []
    if how.count("rule"):
        parts.append(f"{how.count('rule')} by their op's rule")
    if how.count("output"):
        parts.append(f"{how.count('output')} by their outputs' size (?)")
    return "; nodes not run on meta counted " + " and ".join(parts) if parts else ""


def renderable(
    s: SummaryData, depth: int | None = 1, max_rows: int | None = None
) -> RenderableType:
    """The table and totals; past ``max_rows`` rows the rest is counted, not listed."""
    rows = s.rows_at(depth)
    hidden = 0
    if max_rows is not None and len(rows) > max_rows:
        hidden, rows = len(rows) - max_rows, rows[:max_rows]
    table = _RowTable(rows)
    table.hidden = hidden
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


class _RowTable:
    """The table of rows, laid out for the width it is drawn at. The shape and number columns
    are always whole. Where the table is wider than that: one space fewer between columns,
    and the node and op columns share what is left, every longer name wrapped at the
    column's edge (a node's continuation indented under it), none cut short."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.cells = [_cells(r) for r in rows]
        self.hidden = 0  # rows left out (counted on a last line)

    def _width(self, i: int) -> int:
        return max([len(COLUMNS[i]), *(len(c[i]) for c in self.cells)])

    def table(self, narrow: bool = False, node: int | None = None, op: int | None = None) -> Table:
        """The table; ``node`` and ``op``: those columns' widths, each cell wrapped to them."""
        table = Table(
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            show_edge=False,
            header_style="bold",
            collapse_padding=narrow,
        )
        table.add_column(COLUMNS[0], no_wrap=True, width=node)
        table.add_column(COLUMNS[1], overflow="fold", width=op)
        for i in range(2, len(COLUMNS)):
            justify: Literal["left", "right"] = "right" if i >= 3 else "left"
            table.add_column(COLUMNS[i], justify=justify, no_wrap=True, min_width=self._width(i))
        for r, row in zip(self.rows, self.cells, strict=True):
            style = "bold" if r.kind != "node" and not r.folded else None
            name = row[0] if node is None else _hang(row[0], node)
            table.add_row(name, *row[1:], style=style)
        if self.hidden:
            more = Text(f"… {self.hidden:,} more rows", style="dim", overflow="fold")
            table.add_row(more, *[""] * (len(COLUMNS) - 1))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.table()
        unclamped = options.update_width(1_000_000)
        natural = Measurement.get(console, unclamped, table).maximum
        if natural <= options.max_width:
            yield table
            return
        narrow = self.table(narrow=True)
        node, op = self._width(0), self._width(1)
        others = Measurement.get(console, unclamped, narrow).maximum - node - op
        spare = options.max_width - others  # for the node and op columns
        if node + op > spare:  # the op column gets at least half, the node column the rest
            op = max(min(op, spare // 2), spare - node, 1)
            node = max(spare - op, 1)
        yield self.table(narrow=True, node=node, op=op)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table())


def _hang(name: str, width: int) -> str:
    """``name`` (indented by its depth) in lines of ``width``, each continuation indented two
    more than the name, so the tree stays readable."""
    if len(name) <= width:
        return name
    indent = len(name) - len(name.lstrip(" "))
    hang = min(indent + 2, max(width - 1, 0))
    lines, rest = [name[:width]], name[width:]
    step = max(width - hang, 1)
    while rest:
        lines.append(" " * hang + rest[:step])
        rest = rest[step:]
    return "\n".join(lines)


def text(s: SummaryData, depth: int | None = 1, width: int | None = None) -> str:
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


def as_json(s: SummaryData, depth: int | None = None) -> dict[str, Any]:
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
            **({"activation_estimates": est} if (est := s.activation_estimates) else {}),
            **({} if s.per_rank is None else {"per_rank": s.per_rank.to_json()}),
        },
        "macs": s.macs,
        "macs_symbolic": s.macs_symbolic,
        "macs_convention": "one multiply-add = one MAC, per forward",
        "dims": s.dims,
        "unset_dims": s.unset_dims,
        "inputs": s.inputs,
        "outputs": s.outputs,
        "depth": "all" if depth is None else depth,
        "nodes": [r.to_json() for r in s.rows_at(depth)],
    }


def html_table(s: SummaryData, depth: int | None = 1) -> str:
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
    foot = []
    for label, value, note in totals(s):
        indent = (len(label) - len(label.lstrip())) // 2  # "  trainable" is under "parameters"
        top = "" if indent else "border-top:1px solid #999;"  # each group ruled off
        weight = "" if indent else "font-weight:bold;"
        foot.append(
            f'<tr><td style="text-align:left;padding-left:{0.3 + 1.2 * indent:.1f}em;'
            f'{top}{weight}">{e(label.strip())}</td>'
            f'<td style="text-align:right;{top}{weight}">{e(value)}</td>'
            f'<td style="text-align:left;{top}" colspan="5">{e(note)}</td></tr>'
        )
    return (
        f'<table class="archcomp-summary"><caption>{e(s.name)}</caption>'
        f'<thead><tr style="border-bottom:1px solid #999">{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody><tfoot>{''.join(foot)}</tfoot></table>"
    )
