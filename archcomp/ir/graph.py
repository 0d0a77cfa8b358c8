"""The intermediate representation: a flat graph of op nodes, with block scopes kept.

The front end (:mod:`archcomp.frontend.expand`) writes it; passes fill ``Node.outputs``;
backends read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.ir.dims import fmt_shape
from archcomp.ir.tensors import TensorType

if TYPE_CHECKING:
    from archcomp.ir.opdef import OpArgs, OpDef


@dataclass(frozen=True)
class Ref:
    """A reference to a tensor: an input, or one result of a node."""

    node: str
    result: str | None = None

    def __str__(self) -> str:
        return self.node if self.result is None else f"{self.node}.{self.result}"


@dataclass(frozen=True)
class Origin:
    """Where a thing was written: a spec file and a path inside it."""

    doc: SourceDoc
    path: YamlPath

    def __repr__(self) -> str:
        return f"Origin({self.doc.file!r}, {self.path!r})"


@dataclass(frozen=True)
class Scope:
    """A block instance enclosing nodes, e.g. ``encoder`` (block ``encoder_stack``)."""

    name: str  # qualified instance name: "encoder", "encoder.layers.0"
    block: str  # block name, or the op name for a repeated op node
    label: str | None = None
    repeat: int | None = None  # count, when this scope is one copy of a repeat
    repeat_param: str | None = None  # param the count came from ("N"), if any
    index: int | None = None
    shared: bool = False
    drawn_open: bool = False  # the block's ``figure: {open: true}``: drawn open by default


@dataclass
class Node:
    """One op application: ``name`` is the qualified id (``encoder.layers.0.attn``)."""

    name: str
    op: OpDef
    args: OpArgs
    inputs: dict[str, Ref | list[Ref]]
    origin: Origin
    label: str | None = None
    scopes: tuple[Scope, ...] = ()
    tie: dict[str, tuple[str, str]] = field(default_factory=dict)  # param -> (node, param)
    shared_with: str | None = None  # node whose weights this one reuses
    init: dict[str, Any] = field(default_factory=dict)
    # init defaults of the enclosing block calls, innermost first: (key, spec, where written)
    init_defaults: list[tuple[str, Any, Origin]] = field(default_factory=list)
    outputs: dict[str, TensorType] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # short: a node's origin holds its whole spec file
        out = ", ".join(f"{k} {fmt_shape(t.shape)}" for k, t in self.outputs.items())
        return f"Node({self.name!r}, {self.op.name}" + (f", {out})" if out else ")")

    def refs(self) -> list[Ref]:
        out: list[Ref] = []
        for r in self.inputs.values():
            out.extend(r if isinstance(r, list) else [r])
        return out

    @property
    def local_id(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass
class InputInfo:
    name: str
    type: TensorType
    origin: Origin
    doc: str | None = None


@dataclass
class Graph:
    """A checked model: inputs, op nodes in topological order, outputs."""

    name: str
    description: str | None
    params: dict[str, Any]
    dims: dict[str, int]  # example sizes of symbols, for summaries
    inputs: dict[str, InputInfo]
    nodes: dict[str, Node]
    outputs: dict[str, Ref]
    output_origins: dict[str, Origin]
    root: Origin
    spec_factory: Callable[[], dict[str, Any]] | None = None
    # What rebuilds this graph exactly: {"main": key, "files": {key: text}, "params": {...}},
    # every spec text read (by path relative to the top-level spec's folder) and the overrides
    source: dict[str, Any] | None = None
    # Block instances (``encoder.layers.0``): the block's input name -> the tensor bound to it
    scope_inputs: dict[str, dict[str, Ref]] = field(default_factory=dict)
    # ... and the block's output name -> the tensor it names
    scope_outputs: dict[str, dict[str, Ref]] = field(default_factory=dict)
    # node name -> the position it was written at: ties in topological order follow the text
    written_order: dict[str, int] = field(default_factory=dict)
    # inputs and nodes read by absent nodes ('when' false, 'repeat: 0'), for the unused checks
    read_by_absent: set[str] = field(default_factory=set)
    # least values of symbols, declared in ``dims`` (``T: {min: 2}``); a size is at least 1
    dim_min: dict[str, int] = field(default_factory=dict)
    # output name -> how the figure draws it after the output (``figure: {outputs: ...}``:
    # "probabilities"); drawing only, the model returns the output as computed
    output_figures: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        """One screen at most: name, node count, inputs, outputs (``repr`` of a 3-node graph
        used to print its whole source text)."""
        ins = ", ".join(f"{n} {i.type}" for n, i in self.inputs.items())
        outs = ", ".join(
            f"{n} {fmt_shape(t.shape) if t else '?'}" for n, t in self.output_types.items()
        )
        return f"Graph({self.name!r}: {len(self.nodes)} nodes; inputs {ins}; outputs {outs})"

    def _repr_html_(self) -> str:
        """In a notebook: the interactive view (:func:`archcomp.view`), else the repr."""
        import html

        from archcomp.base.display import html_view

        return html_view(self) or f"<code>{html.escape(repr(self))}</code>"

    @cached_property
    def spec(self) -> dict[str, Any]:
        """The normalized spec: self-contained (imported blocks inlined), params set to values."""
        return self.spec_factory() if self.spec_factory else {}

    def type_of(self, ref: Ref) -> TensorType | None:
        if ref.node in self.inputs:
            return self.inputs[ref.node].type
        node = self.nodes.get(ref.node)
        if node is None or not node.outputs:
            return None
        return node.outputs.get(ref.result or node.op.results[0])

    @property
    def output_types(self) -> dict[str, TensorType | None]:
        return {k: self.type_of(r) for k, r in self.outputs.items()}
