"""Computing a summary: per node, its output shape, parameters (each tensor once), memory,
activations and MACs, and the model's totals.

Parameters are counted on the compiled module (built on meta: nothing allocated), each tensor
once: a tied weight counts at the first node that owns it (the tying node is marked), a shared
node counts nothing. Memory is in the build dtype; the training step adds gradients, optimizer
state and activations (see :mod:`archcomp.backends.torch.memory`). MACs follow the convention
one multiply-add = one MAC, per forward, with symbolic dims set to the spec's ``dims`` example
sizes (a symbol without one counts as 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
from torch import nn

from archcomp.backends.torch.codegen import fmt_shape_comment
from archcomp.backends.torch.devices import dtype_name, resolve_dtype
from archcomp.backends.torch.memory import (
    META_ERRORS,
    OPTIMIZERS,
    concrete,
    optimizer_bytes,
    per_rank,
    trace_activations,
)
from archcomp.backends.torch.metatwin import on_meta
from archcomp.backends.torch.module import all_tensors, get_path
from archcomp.backends.torch.summary_fold import Level, Row, SummaryData, levels_of
from archcomp.base.errors import UsageError, did_you_mean
from archcomp.base.gcpause import paused
from archcomp.ir import Graph, Node, TensorType
from archcomp.ir.dims import Dim, DimTooLarge, Sym, to_json, total

S = TypeVar("S", bound=SummaryData)


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


def input_symbols(g: Graph) -> list[str]:
    """The symbols of the graph's input shapes (``B``, ``T``), sorted."""
    symbols: set[str] = set()
    for info in g.inputs.values():
        for d in info.type.shape:
            if isinstance(d, Sym):
                symbols |= {s for s in d.symbols if s.isidentifier()}
    return sorted(symbols)


def example_sizes(g: Graph, dims: Mapping[str, int] | None = None) -> dict[str, int]:
    """``dims`` over the spec's ``dims``, and 1 for every other symbol of the graph's inputs
    (:func:`unset_dims` names those). A name that is neither is a :class:`UsageError`, as is a
    size below 1 or below the dim's declared ``min``."""
    known = dict.fromkeys([*input_symbols(g), *g.dims])
    for name, size in (dims or {}).items():
        if name not in known:
            hint = did_you_mean(name, known)
            raise UsageError(
                f"unknown dim '{name}'"
                + (f" ({hint})" if hint else "")
                + f"; the inputs' dims are {', '.join(known) or 'none'}"
            )
        least = max(g.dim_min.get(name, 1), 1)
        if isinstance(size, bool) or not isinstance(size, int) or size < least:
            raise UsageError(f"dim {name} must be an integer >= {least}, found {size!r}")
    sizes = {s: g.dims.get(s, 1) for s in input_symbols(g)}
    sizes.update(g.dims)
    sizes.update(dims or {})
    return sizes


def unset_dims(g: Graph, dims: Mapping[str, int] | None = None) -> list[str]:
    """The input symbols neither the spec's ``dims`` nor ``dims`` set: a summary takes 1."""
    return [s for s in input_symbols(g) if s not in g.dims and s not in (dims or {})]


@dataclass
class Activations:
    """Bytes kept for backward: per node (None: the forward could not run at all), the total
    (checkpointed when asked), and the nodes estimated rather than measured."""

    per_node: dict[str, int] | None = None
    total: int | None = None
    estimated: dict[str, str] = field(default_factory=dict)


def measure_activations(
    model: nn.Module, g: Graph, sizes: Mapping[str, int], dt: torch.dtype, checkpointing: bool
) -> Activations:
    try:
        trace = trace_activations(model, g, sizes, dt)
    except META_ERRORS:  # not attributable to one node: the rest stands, activations "?"
        return Activations()
    total = trace.checkpointed() if checkpointing else trace.total
    return Activations(trace.per_node, total, trace.estimated)


@dataclass
class NodeRows:
    """The node rows, and what counting each tensor once found on the way."""

    rows: list[Row] = field(default_factory=list)
    levels: dict[str, tuple[Level, ...]] = field(default_factory=dict)
    ties: dict[str, str] = field(default_factory=dict)  # "lm_head.weight" -> "wte.weight"
    tied_elements: int = 0
    macs: Dim = 0
    owner: dict[int, str] = field(default_factory=dict)  # id(parameter) -> its first name

    def own_tensor(self, node: Node, p: nn.Parameter, path: str) -> tuple[int, int, int, list[str]]:
        """:meth:`weights` of a ``parameter`` node with ``key: self``: its Parameter at
        ``path`` itself, no module around it."""
        if id(p) not in self.owner:
            self.owner[id(p)] = path
            return p.numel(), p.numel() * p.element_size(), 0, []
        self.tied_elements += p.numel()
        if node.shared_with is None:
            return 0, 0, 0, []
        self.ties[node.name] = node.shared_with
        return 0, 0, 0, [f"shares {node.shared_with}"]

    def weights(self, node: Node, mod: nn.Module, path: str) -> tuple[int, int, int, list[str]]:
        """Parameters, their bytes and buffer bytes a node owns, and what it ties to."""
        if isinstance(mod, nn.Parameter):  # the node's own tensor, keyed by its id (key: self)
            return self.own_tensor(node, mod, path)
        if isinstance(mod, torch.Tensor):  # the node's own buffer, keyed by its id (key: self)
            own = node.shared_with is None
            return 0, 0, mod.numel() * mod.element_size() if own else 0, []
        params = pbytes = bbytes = 0
        tied: list[str] = []
        for pname, p in _named_parameters(mod):
            if id(p) not in self.owner:
                self.owner[id(p)] = f"{path}.{pname}"
                params += p.numel()
                pbytes += p.numel() * p.element_size()
            elif node.shared_with is None or pname in node.tie:
                tied.append(f"{pname} = {self.owner[id(p)]}")
                self.ties[f"{node.name}.{pname}"] = self.owner[id(p)]
                self.tied_elements += p.numel()
        if node.shared_with is None:
            bbytes = sum(b.numel() * b.element_size() for b in all_tensors(mod, "_buffers"))
        else:
            tied.append(f"shares {node.shared_with}")
            self.tied_elements += sum(p.numel() for p in all_tensors(mod, "_parameters"))
            self.ties[node.name] = node.shared_with
        return params, pbytes, bbytes, tied


def _named_parameters(mod: nn.Module) -> Any:
    """``mod.named_parameters()``; a leaf module's read from its table (most nodes')."""
    if mod._modules:
        return mod.named_parameters()
    seen: set[int] = set()
    out = []
    for name, p in mod._parameters.items():
        if p is not None and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def node_rows(g: Graph, model: nn.Module, sizes: Mapping[str, int], acts: Activations) -> NodeRows:
    """A row per node, in graph order."""
    out = NodeRows()
    paths: Mapping[str, str | None] = getattr(model, "node_modules", None) or {
        name: m.get("module") for name, m in getattr(model, "node_meta", {}).items()
    }  # node_meta computes every node's metadata: only the module paths are needed here
    scopes: dict[int, tuple[Level, ...]] = {}  # each scope's levels, made once
    shown: dict[Dim, tuple[int, str]] = {}  # a MAC count's value and text, made once
    every: list[Dim] = []
    for node in g.nodes.values():
        path = paths.get(node.name)
        params = pbytes = bbytes = 0
        tied: list[str] = []
        if path is not None:
            params, pbytes, bbytes, tied = out.weights(node, get_path(model, path), path)
        macs = node_macs(node, g, sizes)
        every.append(macs)
        at = shown.get(macs)
        if at is None:
            at = shown[macs] = (concrete(macs, sizes), str(macs))
        first: TensorType | None = next(iter(node.outputs.values()), None)
        note = node.op.note(node.args) if node.op.note else None
        row = Row(
            node.name,
            f"{node.op.name} ({note})" if note else node.op.name,
            fmt_shape_comment(first.shape) if first else "?",
            [to_json(d) for d in first.shape] if first else None,
            params,
            pbytes,
            bbytes,
            acts.per_node.get(node.name, 0) if acts.per_node is not None else None,
            at[0],
            at[1],
            len(node.scopes),
            tied=tuple(tied),
            activation_source=acts.estimated.get(node.name, "trace"),
        )
        out.rows.append(row)
        out.levels[node.name] = levels_of(node, scopes)
    out.macs = total(every)
    return out


def check_options(optimizer: str, world_size: int | None) -> None:
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer '{optimizer}'; choose {', '.join(OPTIMIZERS)}")
    if world_size is not None and (
        isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1
    ):
        raise UsageError(f"world size must be a positive int, found {world_size!r}")


@paused()  # a node's rows, metadata and meta tensors: all live until the summary returns
def summarize_as(
    cls: type[S],
    g: Graph,
    model: nn.Module | None = None,
    *,
    dtype: Any = None,
    optimizer: str = "adamw",
    checkpointing: bool = False,
    world_size: int | None = None,
    dims: Mapping[str, int] | None = None,
) -> S:
    """The summary of ``g`` as a ``cls`` (see :func:`archcomp.backends.torch.summary.summarize`)."""
    check_options(optimizer, world_size)
    sizes = example_sizes(g, dims)
    dt = resolve_dtype(dtype)
    if model is None or any(
        p.dtype != dt for p in all_tensors(model, "_parameters") if p.is_floating_point()
    ):
        from archcomp.backends.torch.build import build_graph

        model = build_graph(g, device="meta", dtype=dt)
    with on_meta(model):  # a build on a real device: its weights stood in for, nothing allocated
        return _summary(cls, g, model, sizes, dt, optimizer, checkpointing, world_size, dims)


def _summary(
    cls: type[S],
    g: Graph,
    model: nn.Module,
    sizes: dict[str, int],
    dt: torch.dtype,
    optimizer: str,
    checkpointing: bool,
    world_size: int | None,
    dims: Mapping[str, int] | None,
) -> S:
    acts = measure_activations(model, g, sizes, dt, checkpointing)
    nodes = node_rows(g, model, sizes, acts)
    plist = all_tensors(model, "_parameters")
    buffers = all_tensors(model, "_buffers")
    trainable = [p for p in plist if p.requires_grad]
    return cls(
        name=g.name,
        rows=nodes.rows,
        parameters=sum(p.numel() for p in plist),
        trainable_parameters=sum(p.numel() for p in trainable),
        tied_parameters=nodes.tied_elements,
        ties=nodes.ties,
        buffers=sum(b.numel() for b in buffers),
        dtype=dtype_name(dt),
        param_bytes=sum(p.numel() * p.element_size() for p in plist),
        buffer_bytes=sum(b.numel() * b.element_size() for b in buffers),
        grad_bytes=sum(p.numel() * p.element_size() for p in trainable),
        optimizer=optimizer,
        optimizer_bytes=optimizer_bytes(optimizer, plist),
        activation_bytes=acts.total,
        checkpointing=checkpointing,
        macs=concrete(nodes.macs, sizes),
        macs_symbolic=str(nodes.macs),
        dims=sizes,
        unset_dims=unset_dims(g, dims),
        inputs={n: i.type.to_json() for n, i in g.inputs.items()},
        outputs={n: t.to_json() if t else None for n, t in g.output_types.items()},
        hyperparams=dict(g.params),
        node_levels=nodes.levels,
        per_rank=None if world_size is None else per_rank(model, optimizer, world_size, acts.total),
    )
