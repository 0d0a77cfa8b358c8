"""The summary as a rich table (terminals, plain text), an HTML table (notebooks) and JSON.

Every view shows :meth:`Summary.rows_at` at one depth; numbers are in human units (k/M/G/T,
KiB/MiB/GiB) except in JSON, which keeps the exact integers.
"""

from __future__ import annotations

import html
import io
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from archcomp.base.units import fmt_bytes, fmt_count

if TYPE_CHECKING:
    from archcomp.backends.torch.summary import Row, Summary

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
    return lines


def renderable(s: Summary, depth: int | None = 1) -> RenderableType:
    rows = s.rows_at(depth)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="right" if i >= 3 else "left", no_wrap=i != 1)
    for r in rows:
        style = "bold" if r.kind != "node" and not r.folded else None
        table.add_row(*_cells(r), style=style)
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
    from archcomp.backends.torch.summary import JSON_FORMAT_VERSION

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
