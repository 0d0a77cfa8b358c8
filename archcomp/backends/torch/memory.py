"""Memory of a training step, from a build on the meta device (nothing allocated).

- Parameters, buffers and gradients: bytes in the build dtype, each tensor once.
- Optimizer state: ``adamw`` keeps two moments per parameter in its dtype and a float32
  ``step`` per tensor (as ``torch.optim.AdamW``); ``sgd`` is SGD with momentum, one buffer
  per parameter (``torch.optim.SGD(momentum=...)``; plain SGD keeps none: use ``none``).
- Activations: the bytes autograd keeps for the backward pass during one training forward
  at the spec's ``dims``. :func:`trace_activations` runs the forward on meta tensors under
  ``torch.autograd.graph.saved_tensors_hooks`` (an op called again as before is not run
  again: :mod:`archcomp.backends.torch.metacache`) and counts each kept storage once, at the node
  that first keeps it; parameters and buffers are not activations. Attention follows the meta
  device's kernel, torch's math path (the one the MACs count, and the one CPU training with
  attention dropout takes); fused kernels (flash, memory-efficient) keep less: they do not
  keep the (B, h, T, S) attention weights.
- A node whose lowering cannot run on meta tensors (data-dependent: ``.item()``, ``nonzero``)
  is estimated on its own: by its op's activation rule (``OpDef.activations``), else by the
  size of its outputs (marked unknown, ``ActivationTrace.estimated``); the forward goes on
  from stand-in meta tensors of its output types, so the other nodes are still measured.
- Activation checkpointing (``checkpointing=True``): each copy of a repeated block keeps only
  its inputs, and one copy's activations are alive again while its backward recomputes it.
  This models ``archcomp.build(..., activation_checkpointing=True)``, which checkpoints the
  same copies (:func:`archcomp.backends.torch.checkpointing.repeated_blocks`): what such a
  build keeps after its forward is the estimate less the one recomputed copy
  (tests/test_activation_checkpointing.py measures it).
- Per rank under FSDP (``world_size``, :func:`per_rank`): parameters, gradients and optimizer
  state are sharded, each rank holding 1/N of each (rounded up, as FSDP2 pads dim 0);
  buffers are replicated; activations are those of the rank's own batch (the spec's dims).
  While a unit runs it is unsharded: add the largest unit's full parameters (and, in the
  backward, its full gradients) at the peak.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from archcomp.backends.torch.memory_replay import Kept, Replays
from archcomp.backends.torch.metacache import MetaResults
from archcomp.backends.torch.module import CompiledBlock, all_modules, all_tensors
from archcomp.backends.torch.nocompile import without_compiler_imports
from archcomp.ir import Graph, Node, TensorType
from archcomp.ir.dims import Dim, Sym, substitute

OPTIMIZERS = ("adamw", "sgd", "none")
_CALLS = ("call_module", "call_function", "call_method")  # what may be replayed
STEP_BYTES = 4  # AdamW's per-tensor step counter: a float32 scalar
# what a lowering that cannot run on meta tensors raises (NotImplementedError is a RuntimeError)
META_ERRORS = (RuntimeError, TypeError, ValueError)


def optimizer_bytes(optimizer: str, params: list[torch.Tensor]) -> int:
    """Bytes of optimizer state for the trainable ``params`` after one step."""
    trainable = [p for p in params if p.requires_grad]
    size = sum(p.numel() * p.element_size() for p in trainable)
    if optimizer == "adamw":
        return 2 * size + STEP_BYTES * len(trainable)
    if optimizer == "sgd":
        return size
    if optimizer == "none":
        return 0
    raise ValueError(f"unknown optimizer {optimizer!r}; choose {', '.join(OPTIMIZERS)}")


@dataclass
class ActivationTrace:
    """Saved-for-backward bytes per node, and what checkpointing the repeated blocks keeps."""

    per_node: dict[str, int] = field(default_factory=dict)
    copies: dict[str, tuple[int, int]] = field(default_factory=dict)  # copy -> (inputs, kept)
    # nodes that could not run on meta: "rule" (their op's activation rule) or "output"
    # (no rule: their outputs' size, an unknown)
    estimated: dict[str, str] = field(default_factory=dict)
    kept: int = 0  # the sum of per_node so far (what a copy adds is read off it: no re-summing)

    def count(self, name: str, nbytes: int) -> None:
        """Add ``nbytes`` to node ``name``."""
        self.per_node[name] = self.per_node.get(name, 0) + nbytes
        self.kept += nbytes

    @property
    def total(self) -> int:
        return sum(self.per_node.values())

    def checkpointed(self) -> int:
        """Total with every traced block copy checkpointed: its inputs, plus the largest
        copy's activations while its backward recomputes it."""
        if not self.copies:
            return self.total
        inside = sum(kept for _, kept in self.copies.values())
        inputs = sum(ins for ins, _ in self.copies.values())
        return self.total - inside + inputs + max(kept for _, kept in self.copies.values())


def concrete(d: Dim, sizes: Mapping[str, int]) -> int:
    """A dim at example sizes; symbols without a size count as 1."""
    v = substitute(d, dict(sizes))
    if isinstance(v, Sym):
        v = substitute(v, {s: 1 for s in v.symbols})
    return v if isinstance(v, int) else 0


def meta_tensor(t: TensorType, sizes: Mapping[str, int], dtype: torch.dtype) -> torch.Tensor:
    """A meta tensor of type ``t`` at ``sizes``; a float type in the build ``dtype``."""
    dt = getattr(torch, t.dtype, torch.float32)
    if dt.is_floating_point:
        dt = dtype
    return torch.zeros([concrete(d, sizes) for d in t.shape], dtype=dt, device="meta")


def example_inputs(g: Graph, sizes: Mapping[str, int], dtype: torch.dtype) -> list[torch.Tensor]:
    """Meta tensors for the graph's inputs at ``sizes``; float inputs in the build dtype."""
    return [meta_tensor(info.type, sizes, dtype) for info in g.inputs.values()]


@dataclass
class _Fallback:
    """Estimates a node that cannot run on meta tensors, and stands in for its outputs."""

    g: Graph
    sizes: Mapping[str, int]
    dtype: torch.dtype
    trace: ActivationTrace
    seen: set[int]  # storages already counted

    def estimate(self, name: str) -> None:
        """Its op's activation rule (elements in the build dtype), else its outputs' size."""
        node = self.g.nodes[name]
        rule = node.op.activations
        if rule is not None:
            elements = concrete(rule(node.args, _in_types(self.g, node), node.outputs), self.sizes)
            nbytes, how = elements * self.dtype.itemsize, "rule"
        else:
            outs = [meta_tensor(t, self.sizes, self.dtype) for t in node.outputs.values()]
            nbytes, how = sum(t.numel() * t.element_size() for t in outs), "output"
        self.trace.count(name, nbytes - self.trace.per_node.get(name, 0))
        self.trace.estimated[name] = how

    def stand_in(self, n: fx.Node, name: str, error: Exception) -> torch.Tensor | None:
        """What fx node ``n`` of the failed node ``name`` gives its readers: a meta tensor of
        the node's output type (None if only the node itself reads it): of the result it
        gives (the codegen marks it), or of the only type of the node's results. Otherwise
        ``error`` is raised again."""
        if all(u.meta.get("archcomp_node") == n.meta.get("archcomp_node") for u in n.users):
            return None
        outputs = self.g.nodes[name].outputs
        result = n.meta.get("archcomp_result")
        types = {outputs[result]} if result in outputs else set(outputs.values())
        if len(types) != 1:
            raise error
        out = meta_tensor(types.pop(), self.sizes, self.dtype)
        if self.trace.estimated[name] == "output":  # counted as kept: not again by its readers
            self.seen.add(out.untyped_storage()._cdata)
        return out.requires_grad_() if out.is_floating_point() else out  # as a trained op's


def _in_types(g: Graph, node: Node) -> dict[str, Any]:
    return {
        port: [g.type_of(r) for r in refs] if isinstance(refs, list) else g.type_of(refs)
        for port, refs in node.inputs.items()
    }


def trace_activations(
    model: nn.Module, g: Graph, sizes: Mapping[str, int], dtype: torch.dtype
) -> ActivationTrace:
    """One training forward of a meta ``model`` at ``sizes``, counting what autograd keeps."""
    trace = ActivationTrace({name: 0 for name in g.nodes})
    weights = [*all_tensors(model, "_parameters"), *all_tensors(model, "_buffers")]
    skip = {t.untyped_storage()._cdata for t in weights}
    seen: set[int] = set()
    current = [""]
    kept = Kept(trace.count, skip, seen, current)

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept.keep(t.untyped_storage()._cdata, t.untyped_storage().nbytes(), t)
        return t

    was_training = model.training
    switch = not all(m.training for m in all_modules(model))  # train() walks every module
    if switch:
        model.train()
    try:
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with hooks, MetaResults(), without_compiler_imports():
            repeats = {s.name for n in g.nodes.values() for s in n.scopes if s.repeat is not None}
            fallback = _Fallback(g, sizes, dtype, trace, seen)
            replays = Replays(kept, trace.estimated)
            tracer = _Tracer(
                model, _graph_of(model), lambda n: n, current, fallback, replays, repeats
            )
            keep = tracer.run(*example_inputs(g, sizes, dtype))
        del keep
    finally:
        if switch:
            model.train(was_training)
    trace.per_node.pop("", None)
    return trace


def _graph_of(module: nn.Module) -> fx.Graph:
    graph = module.graph
    assert isinstance(graph, fx.Graph)
    return graph


class _Tracer(fx.Interpreter):
    """Runs the generated forward node by node, naming the archcomp node each op belongs to;
    a block instance runs its class's graph with the instance's names. The outermost copies of
    repeated blocks are what checkpointing would wrap: their inputs and activations are
    recorded in ``trace.copies``. A node that cannot run on meta tensors is estimated by
    ``fallback`` and its remaining fx nodes are stood in for. A copy called as an earlier copy
    of its class was is replayed from it (:mod:`archcomp.backends.torch.memory_replay`)."""

    def __init__(
        self,
        module: nn.Module,
        graph: fx.Graph,
        rename: Callable[[str], str],
        current: list[str],
        fallback: _Fallback,
        replays: Replays,
        repeats: set[str],
        inside: bool = False,
        last_uses: dict[int, dict[fx.Node, list[fx.Node]]] | None = None,
    ) -> None:
        # fx.Interpreter's state, set here: its __init__ lists every submodule of the module
        # (for a block copy, a walk of its whole subtree: quadratic in the nesting) and finds
        # each value's last use, which is the same for every copy of a block class
        self.module, self.graph, self.env = module, graph, {}
        self.garbage_collect_values, self.extra_traceback = True, False
        self.last_uses = {} if last_uses is None else last_uses  # id(graph) -> user -> values
        uses = self.last_uses.get(id(graph))
        if uses is None:
            uses = self.last_uses[id(graph)] = _last_uses(graph)
        self.user_to_last_uses = uses
        self.rename, self.current, self.replays = rename, current, replays
        self.fallback, self.trace = fallback, fallback.trace
        self.repeats = repeats  # the scopes that are copies of a repeat
        self.inside = inside  # within a recorded copy
        self.errors: dict[str, Exception] = {}  # failed node -> why

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """fx.Interpreter.run without its progress bar (made and updated even when disabled)
        and its per-node context: the graph's nodes in order, each value dropped after its
        last use."""
        self.env = {}
        self.args_iter = iter(self.graph.process_inputs(*args))
        for node in self.graph.nodes:
            try:
                self.env[node] = self.run_node(node)
            except KeyError as exc:  # as fx.Interpreter.run: a lookup that failed inside
                raise RuntimeError(*exc.args) from exc
            for dead in self.user_to_last_uses.get(node, ()):
                del self.env[dead]
            if node.op == "output":
                return self.graph.process_outputs(self.env[node])
        return None

    def run_node(self, n: fx.Node) -> Any:
        raw = n.meta.get("archcomp_node")
        name = self.rename(raw) if raw is not None else None
        if name is not None:
            self.current[0] = name
        if name in self.errors:  # the rest of a node that could not run
            return self.fallback.stand_in(n, name, self.errors[name])
        target: Any = self.fetch_attr(str(n.target)) if n.op == "call_module" else n.target
        if isinstance(target, CompiledBlock):
            return self._copy(n, target)
        try:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            run: Callable[[], Any]
            if n.op == "call_module":  # fx.Interpreter.call_module, its module fetched once
                run = functools.partial(target, *args, **kwargs)
            else:
                run = functools.partial(getattr(self, n.op), n.target, args, kwargs)
            if name is None or n.op not in _CALLS:
                return run()
            return self.replays.call(name, n.op, target, args, kwargs, run)
        except META_ERRORS as exc:
            if name is None or name not in self.fallback.g.nodes:
                raise
            self.errors[name] = exc
            self.fallback.estimate(name)
            return self.fallback.stand_in(n, name, exc)

    def _copy(self, n: fx.Node, block: CompiledBlock) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        copy = self.current[0]
        template = type(block).template_scope
        ins = sum(
            a.untyped_storage().nbytes() for a in args if isinstance(a, torch.Tensor)
        )  # what a checkpoint of this copy keeps
        before = self.trace.kept

        def rename(name: str, outer: Callable[[str], str] = self.rename) -> str:
            raw = n.meta["archcomp_node"] + name[len(template) :]
            return outer(raw)

        record = not self.inside and copy in self.repeats
        inner = _Tracer(
            block,
            type(block).graph,
            rename,
            self.current,
            self.fallback,
            self.replays,
            self.repeats,
            self.inside or record,
            self.last_uses,
        )
        if kwargs:  # a copy's call passes its inputs by position: not seen, traced as it is
            out = inner.run(*args, **kwargs)
        else:
            out = self.replays.copy(block, copy, tuple(args), lambda: inner.run(*args))
        if record:
            self.trace.copies[copy] = (ins, self.trace.kept - before)
        return out


def _last_uses(graph: fx.Graph) -> dict[fx.Node, list[fx.Node]]:
    """User -> the values it is the last to read (as fx.Interpreter finds them)."""
    seen: set[fx.Node] = set()
    uses: dict[fx.Node, list[fx.Node]] = {}
    for node in reversed(graph.nodes):
        for n in node._input_nodes:
            if n not in seen:
                seen.add(n)
                uses.setdefault(node, []).append(n)
    return uses


@dataclass(frozen=True)
class PerRank:
    """Per-rank memory of an FSDP training step over ``world_size`` ranks (see the module
    docstring): the figures of one rank, the one holding the largest shards (rank 0)."""

    world_size: int
    param_bytes: int  # this rank's shards
    buffer_bytes: int  # replicated
    grad_bytes: int  # sharded as the parameters
    optimizer_bytes: int  # sharded; AdamW's step counters replicated
    activation_bytes: int | None  # the rank's own batch at the spec's dims
    largest_unit: str  # the FSDP unit with the most parameters ("" is the root)
    unit_param_bytes: int  # its parameters, unsharded while it runs

    @property
    def training_bytes(self) -> int | None:
        """Shards, buffers and activations, plus the largest unit's parameters and gradients
        unsharded (all-gathered for its forward and backward, reduce-scattered after)."""
        if self.activation_bytes is None:
            return None
        return (
            self.param_bytes
            + self.buffer_bytes
            + self.grad_bytes
            + self.optimizer_bytes
            + self.activation_bytes
            + 2 * self.unit_param_bytes
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "world_size": self.world_size,
            "param_bytes": self.param_bytes,
            "buffer_bytes": self.buffer_bytes,
            "grad_bytes": self.grad_bytes,
            "optimizer_bytes": self.optimizer_bytes,
            "activation_bytes": self.activation_bytes,
            "largest_unit": self.largest_unit,
            "unit_param_bytes": self.unit_param_bytes,
            "training_bytes": self.training_bytes,
        }


def shard_bytes(p: torch.Tensor, world_size: int) -> int:
    """Bytes of the largest shard FSDP2 gives a tensor: ``ceil(dim0 / N)`` rows."""
    if p.dim() == 0:
        return p.element_size()
    rows = -(-p.shape[0] // world_size)
    return rows * (p.numel() // max(p.shape[0], 1)) * p.element_size()


def per_rank(
    model: nn.Module, optimizer: str, world_size: int, activation_bytes: int | None
) -> PerRank:
    """The per-rank figures of ``model`` (on meta) sharded by
    :func:`archcomp.distributed.shard` over ``world_size`` ranks."""
    from archcomp.backends.torch.checkpointing import fsdp_units

    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    shards = sum(shard_bytes(p, world_size) for p in params)
    grads = sum(shard_bytes(p, world_size) for p in trainable)
    if optimizer == "adamw":
        opt = 2 * grads + STEP_BYTES * len(trainable)
    elif optimizer == "sgd":
        opt = grads
    else:
        opt = 0
    units = fsdp_units(model)
    inside: set[int] = set()
    sizes: dict[str, int] = {}
    for path in units:
        unit = model.get_submodule(path)
        ps = list(unit.parameters())
        inside.update(id(p) for p in ps)
        sizes[path] = sum(p.numel() * p.element_size() for p in ps)
    sizes[""] = sum(p.numel() * p.element_size() for p in params if id(p) not in inside)
    largest = max(sizes, key=lambda k: sizes[k])
    return PerRank(
        world_size,
        shards,
        sum(b.numel() * b.element_size() for b in model.buffers()),
        grads,
        opt,
        activation_bytes,
        largest,
        sizes[largest] if world_size > 1 else 0,
    )
