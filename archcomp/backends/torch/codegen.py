"""IR -> torch.fx Graph -> :class:`ArchModule`.

Each node's op lowers itself (``OpDef.lower``) through :class:`Lowering`, the compiler's
``LowerCtx``: it registers the node's submodule at the node's qualified name and emits fx nodes.
The forward is fx's generated straight-line code, with the spec's input names as parameters,
the spec's ids as variable names, and each node's output shape as a comment (written by
:mod:`archcomp.backends.torch.readable`)::

    def forward(self, x):
        \"\"\"x: (B, 10) float32 -> y: (B, 2)\"\"\"
        fc1 = self.fc1(x);  x = None  # (B, 5)
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import fx, nn
from torch.fx.graph_module import _forward_from_src  # what GraphModule.recompile uses

from archcomp.backends.torch.blocks import Instance, Level, plan_blocks
from archcomp.backends.torch.devices import Estimate, estimate
from archcomp.backends.torch.init import SeededRNG, init_module, meta_init_skipped
from archcomp.backends.torch.module import (
    ArchModule,
    CompiledBlock,
    all_tensors,
    class_name,
    get_path,
    set_param,
)
from archcomp.backends.torch.readable import ArchCodeGen, indexable_lists
from archcomp.backends.torch.readable import fmt_shape_comment as fmt_shape_comment
from archcomp.base.errors import SpecError
from archcomp.base.gcpause import paused
from archcomp.ir import Graph, Node, Ref, TensorType
from archcomp.ir.dims import Shape, to_json
from archcomp.passes.inits import InitCall

Progress = Callable[[int, int], None]  # (bytes allocated so far, bytes in all)


def weight_key(path: str, pname: str) -> str:
    """The state_dict key of a node's weight ``pname`` at module ``path`` (``""``: the node's
    own tensor, keyed by the path itself: ``parameter`` with ``key: self``)."""
    return f"{path}.{pname}" if pname else path


def forward_graph() -> fx.Graph:
    """An empty fx graph for a generated forward. ``self``, the forward's first argument, is
    taken in its namespace before any node is named, so a node of id ``self`` (transformers'
    ``attention.self``) gets the local ``self_1`` and never shadows the module: node ids are
    attribute paths (``self.self``), never the locals that hold their values."""
    graph = fx.Graph()
    graph._graph_namespace.create_name("self", None)
    return graph


def _drop_unused_selections(graph: fx.Graph) -> None:
    """Remove selections nobody reads (an LSTM's h_n and c_n when only its output is used)."""
    for node in reversed(list(graph.nodes)):
        if node.op == "call_function" and node.target is operator.getitem and not node.users:
            graph.erase_node(node)


class Lowering:
    """The compiler's implementation of :class:`archcomp.ops.registry.LowerCtx` for one node."""

    def __init__(
        self,
        compiler: Compiler,
        node: Node,
        inputs: dict[str, Any],
        in_types: dict[str, Any],
        factory: dict[str, Any],
    ) -> None:
        self.compiler = compiler
        self.node = node
        self.args = node.args
        self.inputs: Mapping[str, Any] = inputs
        self.in_types: Mapping[str, Any] = in_types
        self.out_types: Mapping[str, TensorType] = node.outputs
        self.factory = factory
        self.emitted: list[fx.Node] = []
        self.module_path: str | None = None
        self.frame = compiler.frame
        self.base = node.name[len(self.frame.prefix) :].replace(".", "_")

    @property
    def x(self) -> Any:
        return next(iter(self.inputs.values()))

    def module(self, m: nn.Module) -> Callable[..., fx.Node]:
        path = self.compiler.register_module(self.node, m)
        self.module_path = path
        prefix = self.frame.prefix
        if not path.startswith(prefix):
            raise RuntimeError(f"{self.node.name} calls {path}, outside its block {prefix}")
        target = path[len(prefix) :]  # inside a block class: relative to the block

        def call(*args: Any, **kwargs: Any) -> fx.Node:
            return self._emit("call_module", target, args, kwargs)

        return call

    def tensor(self, t: torch.Tensor, persistent: bool = True) -> fx.Node:
        path = self.compiler.register_tensor(self.node, t, persistent)
        self.module_path = path
        prefix = self.frame.prefix
        if not path.startswith(prefix):
            raise RuntimeError(f"{self.node.name} reads {path}, outside its block {prefix}")
        return self._emit("get_attr", path[len(prefix) :], (), {})

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> fx.Node:
        return self._emit("call_function", fn, args, kwargs)

    def method(self, name: str, *args: Any, **kwargs: Any) -> fx.Node:
        return self._emit("call_method", name, args, kwargs)

    def _emit(self, kind: str, target: Any, args: Any, kwargs: Any) -> fx.Node:
        graph = self.frame.fx_graph
        if graph is None:
            return _UNTRACED
        name = f"{self.base}_{_short(kind, target)}"
        n = graph.create_node(kind, target, tuple(args), dict(kwargs), name=name)
        self.emitted.append(n)
        return n


_UNTRACED: Any = object()  # what lowering passes around in a copy whose code is its class's


@dataclass
class _Frame:
    """Where lowering writes: the model's forward, a block class's forward, or nowhere (a
    further copy of a block class: its modules are built, its code is the class's)."""

    fx_graph: fx.Graph | None
    values: dict[tuple[str, str | None], Any] = field(default_factory=dict)
    prefix: str = ""  # the block copy's module path and ".": names and targets are relative


@dataclass
class Compiler:
    """One compilation of a checked graph onto a device, in a dtype."""

    graph: Graph
    device: torch.device
    dtype: torch.dtype
    seed: int | None = None
    progress: Progress | None = None
    est: Estimate | None = None
    params_on_meta: bool = False  # weights come later (a checkpoint): only buffers allocated
    init: bool = True  # apply the spec's initializers (not when weights will be loaded)
    fx_graph: fx.Graph = field(default_factory=forward_graph)
    root: nn.Module = field(default_factory=nn.Module)
    paths: dict[str, str] = field(default_factory=dict)  # node -> its module path
    values: dict[tuple[str, str | None], Any] = field(default_factory=dict)
    classes: dict[int, type[CompiledBlock]] = field(default_factory=dict)
    done: int = 0  # bytes allocated, for progress

    def __post_init__(self) -> None:
        self.top = _Frame(self.fx_graph, self.values)
        self.frame = self.top

    def register_module(self, node: Node, m: nn.Module) -> str:
        if node.shared_with is not None:
            path = self.paths.get(node.shared_with, node.shared_with)
            self.paths[node.name] = path
            return path
        if node.name in self.paths:
            raise RuntimeError(f"lowering of op '{node.op.name}' registered two modules")
        _place(self.root, node.name, m)
        self.paths[node.name] = node.name
        return node.name

    def register_tensor(self, node: Node, t: torch.Tensor, persistent: bool = True) -> str:
        """A node's Parameter (``parameter`` with ``key: self``), or its buffer (``buffer`` with
        ``key: self``), placed at its own name."""
        if node.shared_with is not None:
            return self.register_module(node, nn.Module())  # the shared node's path
        if node.name in self.paths:
            raise RuntimeError(f"lowering of op '{node.op.name}' registered two tensors")
        owner, _, name = node.name.rpartition(".")
        holder = nn.Module()
        _place(self.root, f"{owner}.{name}" if owner else name, holder)  # its parents made
        parent = get_path(self.root, owner) if owner else self.root
        del parent._modules[name]
        if isinstance(t, nn.Parameter):
            parent.register_parameter(name, t)
        else:
            parent.register_buffer(name, t, persistent=persistent)
        self.paths[node.name] = node.name
        return node.name

    def compile(self) -> ArchModule:
        g = self.graph
        self.est = self.est if self.est is not None else estimate(g, self.dtype)
        for name, info in g.inputs.items():
            ph = self.fx_graph.placeholder(name)
            ph.meta["archcomp_comment"] = fmt_shape_comment(info.type.shape)
            self.values[(name, None)] = ph
        real = self.device.type != "meta"
        cls_name = class_name(g.name, "ArchModule")
        plan = plan_blocks(g, taken=(cls_name, "ArchModule", "CompiledBlock"))
        with SeededRNG(self.seed, self.device) as rng:
            self._level(g.nodes.values(), plan, rng)
        self._tie()
        out = self._outputs()
        self.fx_graph.output(out)
        names = tuple(g.inputs)
        codegen = ArchCodeGen(
            names, _docstring(g), indexable_lists(self.root), block_paths(self.root)
        )
        self.fx_graph.set_codegen(codegen)
        _drop_unused_selections(self.fx_graph)
        self.fx_graph.lint()
        model = ArchModule(self.root, self.fx_graph, class_name=cls_name)
        model.spec = g.spec
        model.source = g.source
        model.input_names = names
        model.output_names = tuple(g.outputs)
        model.set_node_meta(self._node_meta)  # computed on first access
        model.node_modules = dict(self.paths)
        if real and not self.params_on_meta:
            _check_placed(model, self.device)
        return model

    def lower_only(self, nodes: Iterable[Node]) -> nn.Module:
        """Build the modules of ``nodes`` alone, tracing no forward, as :meth:`compile` builds
        them (same seeds, same paths); return the root that holds them."""
        self.top = self.frame = _Frame(None)  # a frame with no fx graph: nothing is traced
        with SeededRNG(self.seed, self.device) as rng:
            for node in nodes:
                self._node(node, rng)
        return self.root

    def _node(self, node: Node, rng: SeededRNG) -> None:
        rng.reseed(node.name)
        weights = _Weights(node.op.param_shapes(node.args), node.op.buffer_shapes(node.args))
        self._lower(node, node.meta.get("init", {}), weights)  # planned by passes/inits.py
        if self.progress is not None and self.device.type != "meta":
            assert self.est is not None
            self.done += _node_bytes(node, self.est, weights)
            self.progress(min(self.done, self.est.total_bytes), self.est.total_bytes)

    def _level(self, nodes: Iterable[Node], level: Level, rng: SeededRNG) -> None:
        """Lower ``nodes`` into the current frame: a planned block copy as one call."""
        for node in nodes:
            copy = level.first.get(node.name)
            if copy is not None:
                self._copy(copy, rng)
            elif node.name not in level.covered:
                self._node(node, rng)

    def _copy(self, copy: Instance, rng: SeededRNG) -> None:
        """One block instance: its modules, its class's forward if it is the first instance of
        that class, and one call in its parent's forward (the model's or its parent block's)."""
        assert copy.cls is not None
        parent = self.frame
        if copy.shares is None:
            self._instance(copy, rng)
            target = copy.scope.name
        else:
            for node in copy.nodes:  # the modules are the shared copy's
                assert node.shared_with is not None
                path = self.paths.get(node.shared_with)
                if path is not None:  # a node of no module (an add) has none in any copy
                    self.paths[node.name] = path
            target = copy.shares
        if parent.fx_graph is None:
            return  # a further copy of the parent's class: its forward is written already
        self._call(copy, parent, target)

    def _instance(self, copy: Instance, rng: SeededRNG) -> None:
        """The modules of a block instance of its own, placed at its scope; for the first
        instance of its class, the class's forward too."""
        assert copy.cls is not None
        parent = self.frame
        cls = self.classes.get(id(copy.cls))
        if cls is None:
            name = copy.cls.name
            attrs = {"__module__": CompiledBlock.__module__, "__qualname__": name}
            cls = self.classes[id(copy.cls)] = type(name, (CompiledBlock,), attrs)
        block = cls()
        _place(self.root, copy.scope.name, block)
        first = copy is copy.cls.template
        frame = _Frame(forward_graph() if first else None, prefix=copy.prefix)
        if first:
            assert frame.fx_graph is not None
            for pname, r in zip(copy.params, copy.ext, strict=True):
                ph = frame.fx_graph.placeholder(pname)
                t = self.graph.type_of(r)
                ph.meta["archcomp_comment"] = fmt_shape_comment(t.shape) if t else None
                frame.values[self._key(r)] = ph
        self.frame = frame
        try:
            self._level(copy.nodes, copy.inner, rng)
        finally:
            self.frame = parent
        if first:
            keys = [self._key(r) for r in copy.exports]
            _finish_class(cls, block, copy, frame, keys, self.graph)

    def _call(self, copy: Instance, parent: _Frame, target: str) -> None:
        """The call of a block instance (module ``target``) in its parent's forward, and a
        selection of each of its results when it has several."""
        graph = parent.fx_graph
        assert graph is not None
        if not target.startswith(parent.prefix):
            raise RuntimeError(f"{copy.scope.name} calls {target}, outside {parent.prefix}")
        args = tuple(self._value(r) for r in copy.ext)
        base = copy.scope.name[len(parent.prefix) :].replace(".", "_")
        call = graph.create_node("call_module", target[len(parent.prefix) :], args, {}, name=base)
        call.meta["archcomp_node"] = copy.scope.name
        outs = [call]
        if len(copy.exports) > 1:
            outs = [
                graph.create_node(
                    "call_function",
                    operator.getitem,
                    (call, i),
                    {},
                    name=f"{base}_{oname.replace('.', '_')}",
                )
                for i, oname in enumerate(copy.export_names)
            ]
        for r, value in zip(copy.exports, outs, strict=True):
            t = self.graph.type_of(r)
            if t is not None:
                value.meta["archcomp_comment"] = fmt_shape_comment(t.shape)
            parent.values[self._key(r)] = value

    def _lower(self, node: Node, plan: Mapping[str, InitCall], weights: _Weights) -> None:
        if node.op.lower is None:
            raise SpecError(
                [
                    node.origin.doc.diag(
                        "not-compilable",
                        f"op '{node.op.name}' has no torch lowering yet",
                        (*node.origin.path, "op"),
                        node=node.name,
                        op=node.op.name,
                    )
                ]
            )
        inputs: dict[str, Any] = {}
        in_types: dict[str, Any] = {}
        frame = self.frame
        for port, refs in node.inputs.items():
            if isinstance(refs, list):
                inputs[port] = [self._value(r) for r in refs]
                in_types[port] = [self.graph.type_of(r) for r in refs]
            else:
                inputs[port] = self._value(refs)
                in_types[port] = self.graph.type_of(refs)
        ctx = Lowering(self, node, inputs, in_types, self._factory(node, weights))
        result = node.op.lower(ctx)
        results = result if isinstance(result, dict) else {node.op.results[0]: result}
        if frame.fx_graph is not None:
            self._name(node, ctx, results)
            for rname, value in results.items():
                frame.values[(node.name, rname)] = value
        if plan and self.init and node.shared_with is None and ctx.module_path is not None:
            init_module(get_path(self.root, ctx.module_path), plan, self.seed, node.name)

    def _factory(self, node: Node, weights: _Weights) -> dict[str, Any]:
        device = self.device
        params, buffers = weights
        fully_tied = bool(params) and all(p in node.tie for p in params)
        if node.shared_with is not None or (fully_tied and not buffers):
            device = torch.device("meta")  # built only to be discarded or tied: no allocation
        elif self.params_on_meta and not buffers:
            device = torch.device("meta")  # its parameters are filled in by the caller
        return {"device": device, "dtype": self.dtype}

    def _key(self, ref: Ref) -> tuple[str, str | None]:
        if ref.node in self.graph.inputs:
            return (ref.node, None)
        return (ref.node, ref.result or self.graph.nodes[ref.node].op.results[0])

    def _value(self, ref: Ref) -> Any:
        if self.frame.fx_graph is None:
            return _UNTRACED
        return self.frame.values[self._key(ref)]

    def _name(self, node: Node, ctx: Lowering, results: Mapping[str, Any]) -> None:
        base = ctx.base
        finals: dict[int, str] = {}
        mine = {id(n) for n in ctx.emitted}
        for rname, value in results.items():
            if isinstance(value, fx.Node) and id(value) in mine and id(value) not in finals:
                finals[id(value)] = base if len(results) == 1 else f"{base}_{rname}"
                value.meta["archcomp_result"] = rname  # which result (memory.py's stand-ins)
                t = node.outputs.get(rname)
                if t is not None:
                    value.meta["archcomp_comment"] = fmt_shape_comment(t.shape)
        for n in ctx.emitted:
            if id(n) in finals:
                n._rename(finals[id(n)])
            n.meta["archcomp_node"] = node.name

    def _tie(self) -> None:
        for node in self.graph.nodes.values():
            if not node.tie or node.shared_with is not None:
                continue
            own = self.paths.get(node.name)
            if own is None:
                continue
            for pname, (tnode, tparam) in node.tie.items():
                target = self.paths.get(tnode, tnode)
                source = get_path(self.root, weight_key(target, tparam))
                set_param(self.root, weight_key(own, pname), source)

    def _outputs(self) -> Any:
        outs = {name: self._value(ref) for name, ref in self.graph.outputs.items()}
        if len(outs) == 1:
            return next(iter(outs.values()))
        return outs

    def _node_meta(self) -> dict[str, dict[str, Any]]:
        meta: dict[str, dict[str, Any]] = {}
        for node in self.graph.nodes.values():
            meta[node.name] = {
                "op": node.op.name,
                "label": node.label,
                "args": node.args.model_dump(mode="json"),
                "inputs": {
                    p: [str(x) for x in r] if isinstance(r, list) else str(r)
                    for p, r in node.inputs.items()
                },
                "outputs": {
                    k: {"shape": [to_json(d) for d in t.shape], "dtype": t.dtype}
                    for k, t in node.outputs.items()
                },
                "params": {
                    k: [to_json(d) for d in s] for k, s in node.op.param_shapes(node.args).items()
                },
                "tie": {k: weight_key(n, p) for k, (n, p) in node.tie.items()},
                "shared_with": node.shared_with,
                "module": self.paths.get(node.name),
                "scopes": [s.name for s in node.scopes],
            }
        return meta


def _finish_class(
    cls: type[CompiledBlock],
    block: CompiledBlock,
    copy: Instance,
    frame: _Frame,
    exports: list[tuple[str, str | None]],
    g: Graph,
) -> None:
    """Generate the block class's forward from its first copy's graph."""
    graph = frame.fx_graph
    assert graph is not None
    outs = [frame.values[k] for k in exports]
    graph.output(outs[0] if len(outs) == 1 else tuple(outs))
    ins = ", ".join(
        f"{p}: {_type_doc(g.type_of(r))}" for p, r in zip(copy.params, copy.ext, strict=True)
    )
    outs_doc = ", ".join(
        _type_doc(g.type_of(r), dtype=False)
        if len(copy.exports) == 1
        else f"{name}: {_type_doc(g.type_of(r), dtype=False)}"
        for name, r in zip(copy.export_names, copy.exports, strict=True)
    )
    lists = indexable_lists(block)
    doc = f"{ins} -> {outs_doc}"
    blocks = block_paths(block)
    graph.set_codegen(ArchCodeGen(tuple(copy.params), doc, lists, blocks, block=True))
    _drop_unused_selections(graph)
    graph.lint()
    code = graph.python_code(root_module="self")
    cls.forward = _forward_from_src(code.src, code.globals)  # type: ignore[method-assign]
    cls.graph = graph
    cls.code = code.src
    cls.template_scope = copy.scope.name  # the names in ``graph``'s node meta are this copy's


def block_paths(root: nn.Module) -> frozenset[str]:
    """Dotted paths of the block instances under ``root`` (not itself)."""
    return frozenset(
        name
        for name, m in root.named_modules(remove_duplicate=False)
        if name and isinstance(m, CompiledBlock)
    )


def _type_doc(t: TensorType | None, dtype: bool = True) -> str:
    if t is None:
        return "?"
    return f"{fmt_shape_comment(t.shape)} {t.dtype}" if dtype else fmt_shape_comment(t.shape)


def _short(kind: str, target: Any) -> str:
    if kind == "call_module":
        return "mod"
    name = target if isinstance(target, str) else getattr(target, "__name__", "op")
    return re.sub(r"\W", "", str(name)).strip("_") or "op"


def _place(root: nn.Module, path: str, m: nn.Module) -> None:
    parts = path.split(".")
    parent = root
    for i, part in enumerate(parts[:-1]):
        child = parent._modules.get(part)
        if child is None:
            child = nn.ModuleList() if parts[i + 1].isdigit() else nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(parts[-1], m)


class _Weights(NamedTuple):
    """A node's parameter and buffer shapes (its op's, computed once)."""

    params: dict[str, Shape]
    buffers: dict[str, Shape]


def _node_bytes(node: Node, est: Estimate, weights: _Weights) -> int:
    if node.shared_with is not None or est.params + est.buffers == 0:
        return 0
    size = est.total_bytes // max(est.params + est.buffers, 1)
    n = 0
    for pname, shape in weights.params.items():
        if pname not in node.tie:
            n += _numel(shape)
    for shape in weights.buffers.values():
        n += _numel(shape)
    return n * size


def _numel(shape: Shape) -> int:
    out = 1
    for d in shape:
        out *= d if isinstance(d, int) else 0
    return out


def _docstring(g: Graph) -> str:
    ins = ", ".join(f"{n}: {_type_doc(i.type)}" for n, i in g.inputs.items())
    outs = ", ".join(f"{n}: {_type_doc(t, dtype=False)}" for n, t in g.output_types.items())
    return f"{ins} -> {outs}"


def _check_placed(model: nn.Module, device: torch.device) -> None:
    tensors = [*all_tensors(model, "_parameters"), *all_tensors(model, "_buffers")]
    if all(t.device.type == device.type for t in tensors):
        return
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.device.type != device.type:
            raise RuntimeError(
                f"{name} was created on {t.device}, not {device}: its op's lowering ignores "
                "the factory kwargs"
            )


def compile_graph(
    g: Graph,
    device: torch.device,
    dtype: torch.dtype,
    seed: int | None = None,
    progress: Progress | None = None,
    est: Estimate | None = None,
    *,
    params_on_meta: bool = False,
    init: bool = True,
) -> ArchModule:
    """Compile a checked graph into a module on ``device`` in ``dtype``.

    With ``params_on_meta`` only the modules that hold buffers are allocated on ``device``;
    every other parameter stays on meta, for the caller to fill (a checkpoint's tensors)."""
    # thousands of small objects, none of them garbage: skip the collector
    with paused(), meta_init_skipped():  # modules built on meta (all, or tied and loaded ones)
        return Compiler(
            g, device, dtype, seed, progress, est, params_on_meta=params_on_meta, init=init
        ).compile()
