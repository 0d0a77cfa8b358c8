"""A block copy's activation trace replayed from an earlier copy of its class.

Copies of one block class run the same ops with the same arguments on the same shapes
(:func:`~archcomp.backends.torch.blocks.plan_blocks` gives a class only to such copies), so a
copy called with inputs of the same layouts as an earlier one keeps the same tensors for
backward. The first such copy runs on meta (:func:`~archcomp.backends.torch.memory.
trace_activations`) while every tensor autograd keeps is recorded with where its storage came
from: an input of the copy, one of its outputs, or one made inside it. A later copy counts
the same storages, its own inputs' and outputs' and fresh ones, in the same order and at the
same nodes, and gets fresh outputs of the same layouts, without running an op: a trace of
many repeats costs one copy's ops and a list walk per further copy.

A copy is traced again when its inputs differ in anything an op could see (layout, storage
size, shared storage, dtype, ``requires_grad``, being a view or a leaf), when its parameters'
``requires_grad`` differ, or when its class's first copy could not be recorded (a node
estimated rather than run, an output sharing an input's storage or not a dense tensor).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import _has_any_global_hook

from archcomp.backends.torch.metacache import Layout, layouts, make_tensor
from archcomp.backends.torch.module import all_tensors

Saved = tuple[str, int, int]  # (node, storage key, bytes): one tensor autograd kept
_FRESH = itertools.count(-1, -1)  # keys of a replayed copy's own storages: never a real one's


@dataclass
class Kept:
    """Every tensor autograd keeps, in order: counted once per storage (parameters and
    buffers never) at the node that keeps it first, and listed to each open recording."""

    count: Callable[[str, int], None]  # (node, bytes)
    skip: set[int]  # storages of parameters and buffers
    seen: set[int]  # storages counted already
    current: list[str]  # the node running now
    recordings: list[list[Saved]] = field(default_factory=list)
    # the tensors counted: their storages must outlive the trace, or a later one could reuse
    # a key (autograd's graph kept them alive while every copy was traced; a replayed copy's
    # outputs do not lead back to it)
    hold: list[torch.Tensor] = field(default_factory=list)

    def keep(self, key: int, nbytes: int, t: torch.Tensor | None) -> None:
        name = self.current[0]
        for recording in self.recordings:
            recording.append((name, key, nbytes))
        if key not in self.skip and key not in self.seen:
            self.seen.add(key)
            self.count(name, nbytes)
            if t is not None:
                self.hold.append(t)


@dataclass(frozen=True)
class CopyPlan:
    """What one copy kept, relative to the copy: (node suffix, "arg" | "out" | "new", which
    input, output or made storage, bytes) in order, and its outputs' layouts."""

    saves: tuple[tuple[str, str, int, int], ...]
    outs: tuple[Layout, ...]
    grads: tuple[bool, ...]  # each output's requires_grad
    single: bool  # the copy returns one tensor, not a tuple
    last: str  # the node suffix running when the copy returned


def _tensor_key(a: torch.Tensor, storages: dict[int, int]) -> Any:
    st = a.untyped_storage()
    return (
        tuple(a.shape),
        a.stride(),
        a.dtype,
        a.device,
        a.storage_offset(),
        st.nbytes(),
        a.requires_grad,
        a.is_leaf,
        a._is_view(),
        storages.setdefault(st._cdata, len(storages)),  # inputs sharing a storage
    )


def copy_key(block: nn.Module, args: tuple[Any, ...]) -> Any | None:
    """Everything about a copy's call an op could see; None if an input is not a tensor."""
    storages: dict[int, int] = {}
    parts = []
    for a in args:
        if not isinstance(a, torch.Tensor) or a.layout != torch.strided:
            return None
        parts.append(_tensor_key(a, storages))
    grads = tuple(p.requires_grad for p in all_tensors(block, "_parameters"))
    return (type(block), block.training, tuple(parts), grads)


class _Unkeyable(Exception):
    """A value a key cannot hold: not hashable, or a module with hooks or submodules."""


_MODULE_STATE = frozenset(vars(nn.Module()))  # what every module holds: tables and hooks
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def node_key(op: str, target: Any, args: Any, kwargs: Any) -> tuple[Any, list[torch.Tensor]]:
    """The key of one fx call (its target and everything about its arguments an op could
    see) and its tensor arguments in order; a call_module's target is the module: a leaf
    without hooks, keyed by its type, attributes and weights' layouts. Raises _Unkeyable."""
    tensors: list[torch.Tensor] = []
    storages: dict[int, int] = {}

    def key(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            if a.layout != torch.strided:
                raise _Unkeyable
            tensors.append(a)
            return _tensor_key(a, storages)
        if isinstance(a, (list, tuple)):
            return (type(a), tuple(key(x) for x in a))
        if isinstance(a, dict):
            return (dict, tuple((k, key(v)) for k, v in a.items()))
        try:
            hash(a)
        except TypeError:
            raise _Unkeyable from None
        return (type(a), a)

    if op == "call_module":
        target = _module_key(target, key)
    head = (op, target)
    return (head, key(args), key(kwargs)), tensors


def _module_key(m: nn.Module, key: Callable[[Any], Any]) -> Any:
    """A leaf module as what its forward can read: its type, attributes and weights."""
    if m._modules or any(getattr(m, h) for h in _HOOKS) or _has_any_global_hook():
        raise _Unkeyable  # a hook may count or change what it sees
    parts = tuple((k, key(v)) for k, v in vars(m).items() if k not in _MODULE_STATE)
    weights = [
        None if t is None else (tuple(t.shape), t.stride(), t.dtype, t.requires_grad)
        for t in [*m._parameters.values(), *m._buffers.values()]
    ]
    return (type(m), m.training, parts, tuple(m._parameters), tuple(m._buffers), tuple(weights))


def make_plan(
    recorded: list[Saved], copy: str, args: tuple[Any, ...], out: Any, last: str, skip: set[int]
) -> CopyPlan | None:
    """The plan of a copy traced while ``recorded`` was open; None if it cannot be replayed."""
    outs = [out] if isinstance(out, torch.Tensor) else list(out) if type(out) is tuple else None
    if not outs or not _inside(last, copy):
        return None
    made = layouts(outs)
    if made is None or any(
        t.numel() * t.element_size() != t.untyped_storage().nbytes() for t in outs
    ):
        return None  # not dense: a clone would not keep its strides
    arg_at = {a.untyped_storage()._cdata: i for i, a in enumerate(args)}
    out_at = {t.untyped_storage()._cdata: j for j, t in enumerate(outs)}
    if arg_at.keys() & out_at.keys():
        return None  # an output shares an input's storage
    new: dict[int, int] = {}
    saves = []
    for name, key, nbytes in recorded:
        if key in skip:
            continue
        if not _inside(name, copy):
            return None
        if key in arg_at:
            where = ("arg", arg_at[key])
        elif key in out_at:
            where = ("out", out_at[key])
        else:
            where = ("new", new.setdefault(key, len(new)))
        saves.append((name[len(copy) :], *where, nbytes))
    grads = tuple(t.requires_grad for t in outs)
    return CopyPlan(
        tuple(saves), tuple(made), grads, isinstance(out, torch.Tensor), last[len(copy) :]
    )


def _inside(name: str, copy: str) -> bool:
    return name == copy or name.startswith(copy + ".")


def replay(plan: CopyPlan, copy: str, args: tuple[Any, ...], kept: Kept) -> Any:
    """Count what ``plan`` keeps for the copy ``copy`` called on ``args``; its outputs."""
    outs = []
    with torch._C._DisableTorchDispatch():  # below the trace's dispatch mode: no key to make
        for layout, grad in zip(plan.outs, plan.grads, strict=True):
            fresh = make_tensor(layout)
            outs.append(fresh.requires_grad_().clone() if grad else fresh)  # not a leaf: an op's
    made: dict[int, int] = {}
    for suffix, where, i, nbytes in plan.saves:
        t = None if where == "new" else args[i] if where == "arg" else outs[i]
        key = made.setdefault(i, next(_FRESH)) if t is None else t.untyped_storage()._cdata
        kept.current[0] = copy + suffix
        kept.keep(key, nbytes, t)
    kept.current[0] = copy + plan.last
    return outs[0] if plan.single else tuple(outs)


@dataclass
class Replays:
    """The plans of the block copies and calls traced so far, by their keys."""

    kept: Kept
    estimated: dict[str, str]  # the trace's estimated nodes: a copy with one is not replayed
    plans: dict[Any, CopyPlan | None] = field(default_factory=dict)

    def copy(
        self, block: nn.Module, copy: str, args: tuple[Any, ...], trace: Callable[[], Any]
    ) -> Any:
        """The outputs of the copy ``copy`` of ``block`` on ``args``: replayed, or traced
        (``trace()``) and recorded for the next copy like it."""
        key = copy_key(block, args)
        if key is None:
            return trace()
        return self.run(key, copy, args, trace)

    def call(
        self, name: str, op: str, target: Any, args: Any, kwargs: Any, trace: Callable[[], Any]
    ) -> Any:
        """The outputs of one fx call (``op`` on ``target``) of node ``name``, as :meth:`copy`."""
        try:
            key, tensors = node_key(op, target, args, kwargs)
        except _Unkeyable:
            return trace()
        return self.run(key, name, tuple(tensors), trace)

    def run(
        self, key: Any, name: str, args: tuple[torch.Tensor, ...], trace: Callable[[], Any]
    ) -> Any:
        plan = self.plans.get(key)
        if plan is not None:
            return replay(plan, name, args, self.kept)
        if key in self.plans:  # not replayable: traced as it is
            return trace()
        recording: list[Saved] = []
        self.kept.recordings.append(recording)
        estimated = len(self.estimated)
        try:
            out = trace()
        finally:
            self.kept.recordings.pop()
        ok = len(self.estimated) == estimated
        last = self.kept.current[0]
        plan = make_plan(recording, name, args, out, last, self.kept.skip) if ok else None
        self.plans[key] = plan
        return out
