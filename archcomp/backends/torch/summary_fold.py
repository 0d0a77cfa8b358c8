"""The summary's data: a row per node, the levels (blocks, repeats) each node sits in, and the
folding of rows into a tree (:meth:`SummaryData.rows_at`): an open block is a row with its
subtotal followed by its contents, a block nested deeper than ``depth`` is one row, and a
repeated block whose copies are all folded is one ``96x`` row.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from archcomp.backends.torch.memory import PerRank
from archcomp.ir import Node, Scope

# How a row's activations were found: measured by the meta forward ("trace"), or, for an op
# that cannot run on meta tensors, by its op's activation rule ("rule") or its outputs' size
# ("output": an unknown, marked "?").
SOURCES = ("trace", "rule", "output")


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
    activation_source: str = "trace"  # one of SOURCES; a block's: its least certain row's

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
        if self.activation_source != "trace":
            out["activation_source"] = self.activation_source
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


def levels_of(node: Node, known: dict[int, tuple[Level, ...]] | None = None) -> tuple[Level, ...]:
    """The enclosing levels of a node: each block instance, a repeat around its copies.
    ``known``: each scope's levels, made once for all the nodes inside it."""
    known = {} if known is None else known
    out: list[Level] = []
    for s in node.scopes:
        levels = known.get(id(s))
        if levels is None:
            levels = known[id(s)] = _scope_levels(s)
        if s.name == node.name and s.repeat is not None and s.index is not None:
            levels = levels[:1]  # a repeated op: the copy is the node itself
        out.extend(levels)
    return tuple(out)


def _scope_levels(s: Scope) -> tuple[Level, ...]:
    if s.repeat is not None and s.index is not None:
        repeat = Level(s.name.rsplit(".", 1)[0], s.block, "repeat", s.repeat)
        return (repeat, Level(s.name, s.block, "copy"))
    return (Level(s.name, s.block, "block"),)


@dataclass(repr=False)
class SummaryData:
    """The figures of a summary (:class:`archcomp.backends.torch.summary.Summary` adds its
    views)."""

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
    unset_dims: list[str] = field(default_factory=list)  # dims set neither by spec nor caller: 1

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

    @property
    def activation_estimates(self) -> dict[str, str]:
        """Nodes whose activations the meta forward could not measure: node -> how they
        were estimated (``rule`` or ``output``)."""
        return {r.name: r.activation_source for r in self.rows if r.activation_source != "trace"}

    def rows_at(self, depth: int | None = 1) -> list[Row]:
        """The table's rows with blocks nested deeper than ``depth`` folded (None: every node
        listed, each block as a row with its subtotal before its contents)."""
        out: list[Row] = []
        _emit(_tree(self.rows, self.node_levels), 0, depth, out)
        return out


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
        max((r.activation_source for r in leaves), key=SOURCES.index),
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
