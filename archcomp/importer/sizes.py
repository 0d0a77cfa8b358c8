"""Sizes read from traced tensors (``tokens.size(0)``, ``x.shape[0]``) in the torch.fx importer.

torch.fx traces ``x.size(i)`` as a call whose value is unknown while tracing; the importer keeps
it as a :class:`Size` of the tensor and dim, with the value it had on the example inputs (each
module's example arguments are recorded in one forward run, :func:`record_examples`, and its
traced graph run on them, :func:`example_values`). Where such a size is a target size of
``expand`` (archcomp's own class token, ``class_token.expand(tokens.size(0), -1, -1)``), the
expand takes it as the ``expand`` op does: a named dim of the first input (``B`` of ``dims``)
read from ``like`` at run time, ``shape: [B, -1, -1]``, as the ``--hf`` path's
:func:`archcomp.importer.parameters.expand_to_batch`; any other size is the literal it had.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from archcomp.importer.calls import Ref

Leading = tuple[tuple[int, str], ...]  # the first input's leading named dims: (size, name)
Examples = dict[str, tuple[tuple[Any, ...], dict[str, Any]]]  # module path -> (args, kwargs)


@dataclass(frozen=True)
class Size:
    """``of.size(dim)``: the size of a traced tensor, and its value on the example inputs."""

    of: Ref
    dim: int
    value: int | None

    def __repr__(self) -> str:  # as an error lists it: x.size(0)
        return f"{self.of.name}.size({'' if self.dim < 0 else self.dim})"


def record_examples(module: nn.Module, inputs: dict[str, Any]) -> Examples:
    """Each submodule's arguments of its first call in one forward run on ``inputs``."""
    seen: Examples = {}

    def hook(path: str) -> Any:
        def record(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen.setdefault(path, (args, kwargs))

        return record

    handles = [
        m.register_forward_pre_hook(hook(path), with_kwargs=True)
        for path, m in module.named_modules()
    ]
    try:
        with torch.no_grad():
            module(**inputs)
    except Exception:  # no example values: the sizes are then refused by name
        seen.clear()
    finally:
        for h in handles:
            h.remove()
    return seen


def reads_sizes(graph: fx.Graph) -> bool:
    """Whether the traced forward reads a size of a tensor (``x.size(i)``, ``x.shape``)."""
    return any(
        (n.op == "call_method" and n.target == "size")
        or (n.op == "call_function" and n.target is getattr and n.args[1:] == ("shape",))
        for n in graph.nodes
    )


def example_values(m: nn.Module, graph: fx.Graph, example: Any) -> None:
    """Run ``graph`` (``m``'s traced forward) on ``m``'s example arguments and keep each int
    value (a size) in its node's ``meta["example_int"]``; nothing where it cannot run."""
    if example is None:
        return
    args, kwargs = example
    try:
        bound = inspect.signature(m.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        values = [bound.arguments.get(str(p.target)) for p in graph.nodes if p.op == "placeholder"]

        class _Values(fx.Interpreter):
            def run_node(self, n: fx.Node) -> Any:
                out = super().run_node(n)
                if isinstance(out, int) and not isinstance(out, bool):
                    n.meta["example_int"] = out
                elif isinstance(out, torch.Size):
                    n.meta["example_size"] = tuple(int(s) for s in out)
                return out

        with torch.no_grad():
            _Values(fx.GraphModule(m, graph)).run(*values)
    except Exception:  # no example values: the sizes are then refused by name
        return


def size_value(node: fx.Node, args: tuple[Any, ...]) -> Size | None:
    """``x.size(i)`` as a :class:`Size`, and ``x.size()`` or ``x.shape`` as one of dim -1 (the
    whole shape, indexed next: ``x.shape[i]``); None for any other call."""
    x = args[0] if args else None
    if not isinstance(x, Ref):
        return None
    method = node.op == "call_method" and node.target == "size"
    if method and len(args) == 2 and isinstance(args[1], int):
        return Size(x, args[1], node.meta.get("example_int"))
    whole = node.op == "call_function" and node.target is getattr and args[1:] == ("shape",)
    if whole or (method and len(args) == 1):
        return Size(x, -1, None)
    return None


def indexed(whole: Size, i: Any, node: fx.Node) -> Size | None:
    """``x.shape[i]`` of a whole shape."""
    if whole.dim != -1 or isinstance(i, bool) or not isinstance(i, int) or i < 0:
        return None
    return Size(whole.of, i, node.meta.get("example_int"))


def expand_op(
    args: tuple[Any, ...], kwargs: dict[str, Any], leading: Leading
) -> tuple[str, Any, dict[str, Any]] | str | None:
    """``x.expand(..., t.size(i), ...)`` as ``expand``: a size that is the first input's named
    dim ``i`` (``leading``: its leading named dims as (size, name)) is that name, read from
    ``like: t`` at run time; any other size its example value. None without such a size; a
    reason where it cannot be expressed."""
    sizes = args[1] if len(args) == 2 and isinstance(args[1], list | tuple) else args[1:]
    if kwargs or not any(isinstance(s, Size) for s in sizes) or not isinstance(args[0], Ref):
        return None
    shape: list[int | str] = []
    likes = set()
    for s in sizes:
        if isinstance(s, Size):
            if s.dim < 0 or s.value is None:
                return "a size read from a tensor whose value on the example inputs is unknown"
            named = s.dim < len(leading) and leading[s.dim][0] == s.value
            if named:
                likes.add(s.of)
            shape.append(leading[s.dim][1] if named else s.value)
        elif isinstance(s, int) and not isinstance(s, bool):
            shape.append(s)
        else:
            return f"an expand to {s!r}"
    if len(likes) > 1:
        return "an expand to the sizes of several tensors"
    ins: Any = {"x": args[0], "like": likes.pop()} if likes else [args[0]]
    return "expand", ins, {"shape": shape}


def sized(
    node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], leading: Leading
) -> Size | tuple[str, Any, dict[str, Any]] | str | None:
    """The call at ``node`` where it reads or uses a size of a tensor: the :class:`Size` it
    gives, the ``expand`` it is, or why it cannot be expressed; None for any other call."""
    import operator

    if node.target is operator.getitem and isinstance(args[0], Size):
        return indexed(args[0], args[1], node) or f"a shape indexed by {args[1]!r}"
    made = size_value(node, args)
    if made is not None:
        return made
    if node.op == "call_method" and node.target == "expand":
        return expand_op(args, kwargs, leading)
    return None
