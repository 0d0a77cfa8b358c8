"""One module's forward as an archcomp body (inputs, nodes, outputs), traced with torch.fx one
level deep: every child is a leaf, and a child with children of its own becomes a block."""

from __future__ import annotations

import inspect
import json
import operator
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import fx, nn

from archcomp.frontend.schema import reserved_id
from archcomp.importer.built import built_call, built_results, relative_tie
from archcomp.importer.calls import Ref, Unsupported, call_op, describe
from archcomp.importer.functions import pieces
from archcomp.importer.leaves import RESULTS, leaf_op
from archcomp.importer.nested import merge_nested
from archcomp.importer.ordered import chained_body, named
from archcomp.importer.parameters import OwnTensor, own_buffer
from archcomp.importer.sizes import (
    Examples,
    Size,
    example_values,
    reads_sizes,
    record_examples,
    sized,
)
from archcomp.importer.unify import unify, unify_ops
from archcomp.importer.unread import child_tensors, unread_tensors
from archcomp.ops import all_ops

Body = dict[str, Any]
FAILED = Ref("?")  # the value of a node that could not be imported
_NUMBERED = re.compile(r"([A-Za-z_]\w*)\.([0-9]+)\Z", re.ASCII)  # not '٣', not "0\n"


class _OneLevel(fx.Tracer):
    """Keeps every child a call_module node and records each node's source line."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return True


def source_line(node: fx.Node) -> str:
    """``file.py:12: y = torch.fft.fft(x)``: the user's line that made the node."""
    trace = node.meta.get("stack_trace") or ""
    found = re.findall(r'File "([^"]+)", line (\d+), in \w+\n\s*(.*)', trace)
    found = [f for f in found if not _tracer_frame(f[0])] or found
    found = [f for f in found if "/torch/" not in f[0]] or found  # the caller of nn.Linear
    if not found:
        return "(source line unknown)"
    path, line, code = found[-1]
    return f"{path.rsplit('/', 1)[-1]}:{line}: {code.strip()}"


@dataclass
class Importer:
    """Collects blocks (one per distinct body, named after the class) and every problem."""

    blocks: dict[str, Body] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # body text -> block name
    problems: list[str] = field(default_factory=list)
    built: dict[str, Any] = field(default_factory=dict)  # path -> op of a built model (.built)
    ties: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> a built node's tie
    tied: set[str] = field(default_factory=set)  # the paths whose tie a node carries
    handoff: bool = False  # a built model: its forwards hand values to blocks in lists of one
    root: nn.Module | None = None  # the imported module, run on ``inputs`` for sizes (sizes.py)
    inputs: dict[str, Any] = field(default_factory=dict)
    leading: tuple[tuple[int, str], ...] = ()  # the first input's leading named dims
    examples: Examples | None = None  # each module's example arguments, recorded on demand

    def block_for(self, m: nn.Module, given: list[str], where: str) -> str | None:
        """The block name for child ``m`` called with tensors for ``given`` of its arguments."""
        body = self.body(m, given, where)
        if body is None:
            return None
        key = type(m).__name__ + json.dumps(body, sort_keys=True, default=str)
        if key not in self.keys:
            base = _snake(type(m).__name__)
            name, n = base, 2
            while name in self.blocks:
                name, n = f"{base}_{n}", n + 1
            self.keys[key] = name
            self.blocks[name] = body
        return self.keys[key]

    def merged(self, made: list[Any]) -> tuple[str, dict[str, Any]] | None:
        """One op, or one block reading ``index``, for copies ``(op, ins, args, results)``
        that differ (:mod:`archcomp.importer.unify`); None where they cannot be one."""
        if any(m is None or m[3] is not None for m in made):
            return None
        if not all(m[0] in self.blocks for m in made):
            args = unify_ops([(m[0], m[2]) for m in made])
            return None if args is None else (made[0][0], args)
        body = unify([self.blocks[m[0]] for m in made])
        if body is None:  # copies that call different blocks: one block with params
            return merge_nested([SimpleNamespace(op=m[0], opts=m[2]) for m in made], self)
        key = "unified:" + json.dumps(body, sort_keys=True, default=str)
        if key not in self.keys:
            base = re.sub(r"_?\d+$", "", made[0][0]) or made[0][0]
            name, n = base, 2
            while name in self.blocks:
                name, n = f"{base}_{n}", n + 1
            self.keys[key], self.blocks[name] = name, body
        return self.keys[key], {}

    def body(self, m: nn.Module, given: list[str], where: str) -> Body | None:
        """Trace ``m`` one level deep; arguments not in ``given`` keep their defaults."""
        params = inspect.signature(m.forward).parameters
        concrete = {
            n: p.default
            for n, p in params.items()
            if n not in given and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        try:
            graph = _OneLevel().trace(m, concrete_args=concrete or None)
        except Exception as e:  # fx's reasons are many; each becomes one line
            self.problems.append(
                f"{where or 'the model'} ({type(m).__name__}): torch.fx cannot trace it: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__} at {_raised_at(e)}"
            )
            return None
        if reads_sizes(graph) and self.root is not None:  # x.size(0): its example value
            if self.examples is None:
                self.examples = record_examples(self.root, self.inputs)
            example_values(m, graph, self.examples.get(where))
        if self.handoff:  # archcomp/backends/torch/handoff.py
            _unhand(graph)
        return _Body(self, m, where).run(graph, given)


def _unhand(graph: fx.Graph) -> None:
    """Each block call's ``[x]`` argument read as ``x``."""
    for node in graph.nodes:
        if node.op == "call_module":
            one = [
                isinstance(a, list) and len(a) == 1 and isinstance(a[0], fx.Node) for a in node.args
            ]
            node.args = tuple(a[0] if o else a for a, o in zip(node.args, one, strict=True))


def _tracer_frame(path: str) -> bool:
    """A frame of torch.fx's machinery, not of a module's forward."""
    return any(part in path for part in ("/torch/fx/", "/torch/_", "/torch/utils/"))


def _raised_at(e: BaseException) -> str:
    """``file.py:12: code``: the last frame outside torch.fx of where ``e`` was raised."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__) if not _tracer_frame(f.filename)]
    if not frames:
        return "(source line unknown)"
    f = frames[-1]
    return f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}: {(f.line or '').strip()}"


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    s = re.sub(r"\W", "_", s).strip("_") or "block"
    return s if not reserved_id(s) else f"{s}_block"


@dataclass
class _Body:
    imp: Importer
    module: nn.Module
    where: str
    env: dict[fx.Node, Any] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    first: str | None = None  # the first input: what the first node reads by default
    children: set[str] = field(default_factory=set)  # names of the children called: not for calls
    called: set[str] = field(default_factory=set)  # children emitted so far
    tensors: dict[str, Ref] = field(default_factory=dict)  # bare parameters emitted so far

    def run(self, graph: fx.Graph, given: list[str]) -> Body | None:
        before = len(self.imp.problems)
        order = list(graph.nodes)
        self.children = {str(n.target).split(".")[0] for n in order if n.op == "call_module"}
        inputs = []
        i = 0
        while i < len(order):
            node = order[i]
            if node.op == "placeholder":
                self.env[node] = None  # an argument left at its default (fx asserts it)
                if node.target in given:
                    inputs.append(str(node.target))
                    self.first = self.first or str(node.target)
                    self.ids.add(str(node.target))
                    self.env[node] = Ref(str(node.target))
            elif node.op == "output":
                outputs = self._outputs(node.args[0])
            elif node.op == "call_module":
                i += self._module_call(order, i) - 1
            elif node.op == "get_attr":
                self._attr(node)
            else:
                self._call(node)
            i += 1
        if len(self.imp.problems) > before:
            return None
        read = child_tensors(self.module) | {id(_get(self.module, t)) for t in self.tensors}
        self.nodes += unread_tensors(self.module, read, self.ids | self.children)  # unread.py
        return {"inputs": inputs, "nodes": self.nodes, "outputs": outputs}

    def _fail(self, node: fx.Node, what: str, why: str) -> None:
        """Record the problem; the node's value stands in so later calls are still read."""
        self.imp.problems.append(f"{what} ({why}) at {source_line(node)}")
        self.env[node] = FAILED

    def _id(self, want: str) -> str:
        want = re.sub(r"\W", "_", want)
        name, n = want if not reserved_id(want) else f"{want}_op", 1
        while name in self.ids or name in self.children:
            name, n = f"{want}_{n}", n + 1
        self.ids.add(name)
        return name

    def _emit(self, node_id: str, op: str, ins: Any, args: dict[str, Any], **keys: Any) -> None:
        entry: dict[str, Any] = {"id": node_id, "op": op}
        args = without_defaults(op, args)
        prev = self.nodes[-1]["id"] if self.nodes else self.first
        if isinstance(ins, list) and len(ins) == 1 and ins[0].name == prev and op != "concat":
            pass  # reads the previous node: the default
        elif isinstance(ins, list | dict) and not ins:
            pass  # an op of no input (a parameter)
        elif isinstance(ins, list):
            entry["in"] = (
                ins[0].name if len(ins) == 1 and op not in ("concat",) else [r.name for r in ins]
            )
        else:
            entry["in"] = {k: r.name for k, r in ins.items()}
        self.nodes.append(entry | keys | args)

    def _path(self, target: str) -> str:
        """``self.stages.0.1``: a child by its path from the imported module."""
        return f"self.{self.where}.{target}".replace("..", ".").replace("self..", "self.")

    def _value(self, a: Any) -> Any:
        return fx.node.map_arg(a, lambda n: self.env[n])

    def _attr(self, node: fx.Node) -> None:
        """A tensor attribute read in the forward: the module's own ``nn.Parameter`` (or
        buffer) is a ``parameter`` (or ``buffer``) node keyed by its name (``key: self``,
        :mod:`archcomp.importer.parameters`); a child's tensor is refused."""
        target = str(node.target)
        if target in self.tensors:
            self.env[node] = self.tensors[target]
            return
        p = _get(self.module, target)
        own: OwnTensor | str | None = None
        if isinstance(p, nn.Parameter):
            own = OwnTensor(target, [int(s) for s in p.shape], p.requires_grad)
        elif "." not in target:
            own = own_buffer(self.module, target)
        if not isinstance(own, OwnTensor):
            self._fail(node, f"self.{target}", own or "a tensor not its own parameter or buffer")
            return
        if not target.isidentifier() or reserved_id(target) or target in self.ids:
            why = "a parameter of a child, or a name no node id may be"
            kind = "nn.Parameter" if own.op == "parameter" else "buffer"
            self._fail(node, f"self.{target}", f"a bare {kind}: {why}")
            return
        self.ids.add(target)
        self._emit(target, own.op, [], own.opts())
        self.env[node] = self.tensors[target] = Ref(target)

    def _call(self, node: fx.Node) -> None:
        if getattr(node.target, "__name__", "") == "_assert_is_none":
            return  # fx's check that a defaulted argument stayed at its default
        args, kwargs = self._value(node.args), self._value(node.kwargs)
        if node.target is operator.getitem and isinstance(args[0], tuple):
            self.env[node] = args[0][args[1]]
            return
        size = sized(node, args, kwargs, self.imp.leading)
        if isinstance(size, str):
            self._fail(node, describe(node.target, node.op, args), size)
            return
        try:
            made = size or call_op(node.target, args, kwargs)
        except (Unsupported, KeyError, IndexError, TypeError, ValueError) as e:
            self._fail(node, describe(node.target, node.op, args), str(e) or type(e).__name__)
            return
        if isinstance(made, Ref | Size):
            self.env[node] = made
            return
        op, ins, opts = made
        nid = self._id("select" if node.target is operator.getitem else node.name)
        self._emit(nid, op, ins, opts)
        n = pieces(op, opts)
        self.env[node] = tuple(Ref(f"{nid}.out{j}") for j in range(n)) if n else Ref(nid)

    def _module_call(self, order: list[fx.Node], i: int) -> int:
        """Emit the child call at ``order[i]`` (a run of numbered equal children as one
        repeated node); returns how many graph nodes it took."""
        node = order[i]
        target = str(node.target)
        sub = self.module.get_submodule(target)
        run = _run(order, i, self.module) if _NUMBERED.match(target) else 1
        if isinstance(sub, nn.Identity):
            self.env[node] = self._value(node.args[0])
            return 1
        seq = self._sequential(node, sub, target) if run == 1 else None
        made = seq[0] if seq else self._child(node, sub, target)
        if seq:
            run_of_children = seq[1]
        for k in range(run):  # each call's value until the run is emitted: failed stands in
            self.env[order[i + k]] = FAILED
        if made is None:
            return run
        op, ins, opts, results = made
        if run > 1:
            for k in range(1, run):
                self.env[order[i + k - 1]] = ins[0]  # stands for the copy before, while comparing
            ops = [
                self._child(
                    order[i + k],
                    self.module.get_submodule(str(order[i + k].target)),
                    str(order[i + k].target),  # its own path: a built op's node is by path
                )
                for k in range(1, run)
            ]
            if any(o is None or o[0] != op or o[2] != opts for o in ops):
                merged = self.imp.merged([made, *ops])  # copies that differ through index
                if merged is None and self._ordered(node, target, [made, *ops]):
                    self.env[order[i + run - 1]] = Ref(_NUMBERED.match(target).group(1))  # type: ignore[union-attr]
                    return run
                if merged is None:
                    run = 1
                else:
                    op, opts = merged
        lone = run == 1 and _lone_copy(self.module, target)  # a ModuleList of one: repeat 1
        name = _NUMBERED.match(target).group(1) if run > 1 or lone else target  # type: ignore[union-attr]
        if name in self.called and run == 1 and not any(True for _ in sub.parameters()):
            name = self._id(node.name)  # a module without weights, called again
            self.ids.discard(name)
        elif name in self.called:
            self._fail(
                node, self._path(target), "called twice: shared weights are not imported yet"
            )
            return run
        # a child named 0, 1, ... (an nn.Sequential's): node 0, 1; ASCII digits only, as a
        # node id is ('٣'.isdigit() is true too)
        numbered = re.fullmatch(r"[0-9]+", name) is not None
        named = (name.isidentifier() or numbered) and len(name) <= 64  # a node id's length
        if not named or reserved_id(name) or name in self.ids:
            why = (
                "its name is also an input's: a spec's node ids and inputs share one namespace"
                if name in self.ids
                else "its path is no node id: a numbered child of a ModuleList that is not one "
                "of a run of equal children, a reserved name or longer than 64 characters"
            )
            self._fail(node, self._path(target), why)
            return run
        self.ids.add(name)
        self.called.add(name)
        copies = run_of_children if seq else run
        keys: dict[str, Any] = {"repeat": copies} if copies > 1 or lone else {}
        tie = self.imp.ties.get(f"{self.where}.{target}".lstrip("."))
        if tie and run == 1:
            rel = relative_tie(tie, self.where)
            if rel is None:
                self._fail(node, self._path(target), f"tied to {tie}, outside this block")
                return run
            keys["tie"] = rel
            self.imp.tied.add(f"{self.where}.{target}".lstrip("."))
        self._emit(name, op, ins, opts, **keys)
        last = order[i + run - 1]
        self.env[last] = _results(name, results)
        return run

    def _ordered(self, node: fx.Node, target: str, copies: list[Any]) -> bool:
        """Copies ``P.0``, ``P.1``, ... of one run that cannot be one repeat, as one call of a
        block of nodes ``0``, ``1``, ... (:mod:`archcomp.importer.ordered`); False where a
        copy failed, gives several results, or ``P`` is no free node id."""
        prefix = _NUMBERED.match(target).group(1)  # type: ignore[union-attr]
        if any(c is None or c[3] is not None for c in copies) or prefix in self.ids:
            return False
        if not prefix.isidentifier() or reserved_id(prefix) or prefix in self.called:
            return False
        ins = copies[0][1]
        body = chained_body([(c[0], without_defaults(c[0], c[2])) for c in copies], len(ins) - 1)
        name = named(prefix, body, self.imp.blocks, self.imp.keys)
        self.ids.add(prefix)
        self.called.add(prefix)
        self._emit(prefix, name, ins, {})
        return True

    def _sequential(
        self, node: fx.Node, sub: nn.Module, target: str
    ) -> tuple[tuple[str, Any, dict[str, Any], Any], int] | None:
        """An nn.Sequential of equal children: one repeated call of their op or block (copies
        named ``target.0``, ``target.1``, ... as in torch); None for any other module."""
        if not isinstance(sub, nn.Sequential) or len(sub) < 2:
            return None
        before, blocks = len(self.imp.problems), dict(self.imp.blocks)
        made = [self._child(node, child, f"{target}.{k}") for k, child in enumerate(sub)]
        first = made[0]
        if (
            first is not None
            and first[3] is None
            and any(m is None or m[:1] + m[2:3] != first[:1] + first[2:3] for m in made)
        ):
            merged = self.imp.merged(made)  # children that differ through index
            first = None if merged is None else (merged[0], first[1], merged[1], None)
        if first is None or first[3] is not None:
            del self.imp.problems[before:]  # not a repeat: the block path reports what fails
            self.imp.blocks, self.imp.keys = (
                blocks,
                {k: v for k, v in self.imp.keys.items() if v in blocks},
            )
            return None
        return first, len(sub)

    def _child(
        self, node: fx.Node, sub: nn.Module, target: str
    ) -> tuple[str, Any, dict[str, Any], Any] | None:
        args, kwargs = self._value(node.args), self._value(node.kwargs)
        where = f"{self.where}.{target}".lstrip(".")
        if where in self.imp.built:
            return self._built(node, self.imp.built[where], args, kwargs, target)
        if next(sub.children(), None) is None and type(sub).__module__.startswith("torch.nn"):
            made = leaf_op(sub)
            if made is None or isinstance(made, str):
                why = made or "no archcomp op for it"
                self._fail(node, f"nn.{type(sub).__name__} self.{target}", why)
                return None
            if len(args) != 1 or kwargs or not isinstance(args[0], Ref):
                self._fail(
                    node, f"nn.{type(sub).__name__} self.{target}", "only one tensor argument"
                )
                return None
            return made[0], [args[0]], made[1], RESULTS.get(made[0])
        try:
            bound = inspect.signature(sub.forward).bind(*args, **kwargs).arguments
        except TypeError as e:
            self._fail(node, f"self.{target}", str(e))
            return None
        tensors = {k: v for k, v in bound.items() if isinstance(v, Ref)}
        if any(v is not None and not isinstance(v, Ref) for v in bound.values()):
            self._fail(node, f"self.{target}", "a call with a constant argument")
            return None
        name = self.imp.block_for(sub, list(tensors), where)
        if name is None:
            return None
        outs = self.imp.blocks[name]["outputs"]
        results = tuple(outs) if isinstance(outs, dict) else None
        return name, list(tensors.values()), {}, results

    def _built(
        self, node: fx.Node, made: Any, args: Any, kwargs: Any, target: str
    ) -> tuple[str, Any, dict[str, Any], Any] | None:
        """An op module of a model archcomp built: the op and arguments of its node."""
        ins = built_call(made, args, kwargs)
        if isinstance(ins, str):
            self._fail(node, f"self.{target}", ins)
            return None
        return made[0], ins, made[1], built_results(made[0])

    def _outputs(self, value: Any) -> Any:
        v = self._value(value)
        if isinstance(v, Ref):
            return v.name
        if isinstance(v, tuple | list) and all(isinstance(r, Ref) for r in v):
            return {f"out{k}": r.name for k, r in enumerate(v)}
        if isinstance(v, dict) and all(isinstance(r, Ref) for r in v.values()):
            return {k: r.name for k, r in v.items()}
        self.imp.problems.append(f"{self.where or 'the model'}: returns {v!r}, not tensors")
        return None


def without_defaults(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments that differ from the op's defaults (a block call's are kept)."""
    fields = all_ops()[op].args.model_fields if op in all_ops() else {}
    return {k: v for k, v in args.items() if k not in fields or fields[k].default != v}


def _get(m: nn.Module, target: str) -> Any:
    obj: Any = m
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _results(name: str, results: Any) -> Any:
    """The value a call gives: ``Ref(name)``, or its results as the module returns them."""
    if results is None:
        return Ref(name)

    def walk(r: Any) -> Any:
        return tuple(walk(x) for x in r) if isinstance(r, tuple) else Ref(f"{name}.{r}")

    return walk(tuple(results))


def _lone_copy(module: nn.Module, target: str) -> bool:
    """Whether ``target`` is ``P.0`` of a ModuleList or Sequential ``P`` of one child."""
    m = _NUMBERED.match(target)
    if m is None or m.group(2) != "0":
        return False
    parent = module.get_submodule(m.group(1))
    return isinstance(parent, nn.ModuleList | nn.Sequential) and len(parent) == 1


def _run(order: list[fx.Node], i: int, module: nn.Module) -> int:
    """How many call_module nodes from ``i`` on call ``P.0``, ``P.1``, ... each on the one
    before (other arguments shared), with no other use of the intermediate results."""
    m = _NUMBERED.match(str(order[i].target))
    if m is None or m.group(2) != "0":
        return 1
    n = 1
    while i + n < len(order):
        node, prev = order[i + n], order[i + n - 1]
        if node.op != "call_module" or str(node.target) != f"{m.group(1)}.{n}":
            break
        if not node.args or node.args[0] is not prev or node.args[1:] != order[i].args[1:]:
            break
        if node.kwargs != order[i].kwargs or set(prev.users) != {node}:
            break
        n += 1
    return n


def example_shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)
