"""Meta-device results remembered by what they are computed from.

Many aten ops run on the meta device through torch's Python reference implementations
(``torch.relu`` is ``where(le(x, 0), 0, x)`` with type promotion wrappers around it): about
250 us a call, against 2 us on the CPU. A trace of a 20,000-node forward on meta spent seconds
there. :class:`MetaResults` is a dispatch mode that runs an op once per distinct call (op,
shapes, strides, dtypes, other arguments) and afterwards makes fresh outputs of the same
layout directly. It sits below autograd, so autograd still records each call and keeps what it
keeps (what :func:`~archcomp.backends.torch.memory.trace_activations` counts).

Only ops whose results are new tensors are remembered: an op that mutates an argument or
returns a view of one (its schema says so), or whose results share storage, a storage offset,
a storage larger than their layout needs, or anything that is not a strided tensor, always
runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

Layout = tuple[tuple[int, ...], tuple[int, ...], torch.dtype, torch.device]


class _Unkeyable(Exception):
    """An argument that cannot be part of a key (a mutable or unhashable object)."""


def _key(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return (tuple(a.shape), a.stride(), a.dtype, a.device, a.storage_offset(), a.layout)
    if isinstance(a, (list, tuple)):
        return (type(a), tuple(_key(x) for x in a))
    if a is None or isinstance(a, (bool, int, float, str, torch.dtype, torch.device)):
        return (type(a), a)
    if isinstance(a, (torch.memory_format, torch.layout)):
        return (type(a), a)
    raise _Unkeyable


def _fresh(func: Any) -> bool:
    """Whether ``func`` returns new tensors: no argument mutated, no result aliasing one."""
    schema = func._schema
    return not schema.is_mutable and all(r.alias_info is None for r in schema.returns)


def layouts(out: Any) -> list[Layout] | None:
    """The layouts to remake ``out`` from, or None when an empty tensor would differ."""
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    storages: set[int] = set()
    made: list[Layout] = []
    for t in outs:
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
            return None
        if t.storage_offset() != 0 or t.untyped_storage()._cdata in storages:
            return None
        storages.add(t.untyped_storage()._cdata)
        layout = (tuple(t.shape), t.stride(), t.dtype, t.device)
        if make_tensor(layout).untyped_storage().nbytes() != t.untyped_storage().nbytes():
            return None
        made.append(layout)
    return made


def make_tensor(layout: Layout) -> torch.Tensor:
    shape, stride, dtype, device = layout
    return torch.empty_strided(shape, stride, dtype=dtype, device=device)


class MetaResults(TorchDispatchMode):
    """Within it, an op on meta tensors called as before gets fresh outputs of the layout it
    gave then, without running again (see the module docstring)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._dynamo.disable unless this says
        # no; the wrapper imports torch._dynamo (about 2 s) on the first call. Nothing here
        # runs under torch.compile, so there is nothing to disable.
        return False

    def __init__(self) -> None:
        super().__init__()
        self.known: dict[Any, Callable[[], Any]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        try:
            key = (func, _key(args), _key(tuple(sorted(kwargs.items()))))
        except _Unkeyable:
            return func(*args, **kwargs)
        remake = self.known.get(key)
        if remake is not None:
            return remake()
        out = func(*args, **kwargs)
        made = layouts(out) if _fresh(func) else None
        if made is not None and all(lay[3].type == "meta" for lay in made):
            if isinstance(out, torch.Tensor):
                self.known[key] = lambda: make_tensor(made[0])
            elif type(out) in (tuple, list):
                kind = type(out)
                self.known[key] = lambda: kind(make_tensor(lay) for lay in made)
        return out
