"""The summary: per node and per block, output shape, parameters, memory, activations, MACs.

:func:`summarize` is the entry; the work is in three modules: summary_compute.py (the figures,
from a meta build and its activation trace), summary_fold.py (rows, and their folding into
blocks and repeats) and summary_render.py (text, HTML and JSON views). :class:`Summary` is
what :func:`archcomp.summary` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from archcomp.backends.torch.summary_compute import node_macs, summarize_as
from archcomp.backends.torch.summary_fold import Level, Row, SummaryData
from archcomp.backends.torch.summary_render import (
    COLUMNS,
    JSON_FORMAT_VERSION,
    as_json,
    html_table,
    renderable,
    text,
    totals,
)
from archcomp.ir import Graph

__all__ = [
    "COLUMNS",
    "JSON_FORMAT_VERSION",
    "Level",
    "Row",
    "Summary",
    "as_json",
    "html_table",
    "node_macs",
    "renderable",
    "summarize",
    "text",
    "totals",
]


class Summary(SummaryData):
    """What :func:`archcomp.summary` returns; ``print`` it, or show it in a notebook."""

    def table(self, depth: int | None = 1, width: int | None = None) -> str:
        """The summary as plain text, as ``archcomp summary`` prints it."""
        return text(self, depth, width)

    def to_json(self, depth: int | None = None) -> dict[str, Any]:
        return as_json(self, depth)

    def _repr_html_(self) -> str:
        return html_table(self, 1)

    def __repr__(self) -> str:
        return self.table(1)


def summarize(
    g: Graph,
    model: nn.Module | None = None,
    *,
    dtype: Any = None,
    optimizer: str = "adamw",
    checkpointing: bool = False,
    world_size: int | None = None,
    dims: Mapping[str, int] | None = None,
) -> Summary:
    """The summary of ``g``; ``model`` is its build in ``dtype`` on any device (compiled here on
    meta when not given or in another dtype; a build on a real device is traced with its
    weights stood in for by meta tensors, :mod:`archcomp.backends.torch.metatwin`: the
    activation trace allocates nothing). ``world_size``: add the per-rank
    figures of FSDP over that many ranks (:func:`archcomp.backends.torch.memory.per_rank`).
    ``dims``: the sizes of the inputs' dims (``{"B": 8}``) over the spec's ``dims``."""
    return summarize_as(
        Summary,
        g,
        model,
        dtype=dtype,
        optimizer=optimizer,
        checkpointing=checkpointing,
        world_size=world_size,
        dims=dims,
    )
