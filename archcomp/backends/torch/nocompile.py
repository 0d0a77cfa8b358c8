"""Meta-device kernels without importing torch's compiler (about 0.8 s of CPU at start-up).

Many of torch's meta kernels are Python (``torch._refs``, ``torch._meta_registrations``), and
``torch._disable_dynamo`` wraps many of them (every type-promoting elementwise ref, for one)
so that Dynamo does not trace into them. The wrapper imports ``torch._dynamo`` (and with it
inductor, FSDP and more) on its first call, to make the disabled function it then caches on
the wrapped function as ``__dynamo_disable``; outside ``torch.compile`` a disabled function
does what the function does, so a meta trace pays for an import it does not use.

:func:`without_compiler_imports` caches each such wrapped function as its own disabled form
while a meta trace runs, and removes that cache afterwards, so that a later ``torch.compile``
gets the real one (a ``torch.compile`` running in another thread meanwhile would trace into
them). Where ``torch._dynamo`` is imported already, or torch's internals are not
as expected (another torch version), it does nothing: the kernels then import what they
import, and only start-up is slower. (They still import sympy and
``torch.fx.experimental.symbolic_shapes``, about 0.4 s of CPU, directly: that is not avoided.)
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

CACHE = "__dynamo_disable"  # the attribute torch._compile._disable_dynamo caches on
# modules holding the Python meta kernels and the refs they call
KERNEL_MODULES = ("torch._refs", "torch._prims", "torch._decomp", "torch._meta_registrations")


def _wrapper_code() -> types.CodeType | None:
    """The code of the wrapper ``torch._disable_dynamo`` makes, if it is the expected one."""
    make = getattr(torch, "_disable_dynamo", None)
    code = getattr(make(lambda: None), "__code__", None) if make is not None else None
    return code if code is not None and "fn" in code.co_freevars else None


def _roots() -> list[Any]:
    """The kernels registered for meta and the functions of the modules they come from."""
    roots: list[Any] = []
    for name, mod in list(sys.modules.items()):
        if mod is not None and name.startswith(KERNEL_MODULES):
            roots.extend(vars(mod).values())
    tables = getattr(sys.modules.get("torch._decomp"), "global_decomposition_table", {})
    for table in tables.values():
        roots.extend(table.values())
    return roots


def disabled_functions(code: types.CodeType) -> list[Callable[..., Any]]:
    """The functions wrapped by a ``torch._disable_dynamo`` wrapper (of ``code``), found from
    :func:`_roots` through ``__wrapped__``, closures and partials."""
    cell = code.co_freevars.index("fn")
    found: list[Callable[..., Any]] = []
    seen: set[int] = set()
    stack = [r for r in _roots() if callable(r)]
    while stack:
        f = stack.pop()
        if id(f) in seen:
            continue
        seen.add(id(f))
        if isinstance(f, functools.partial):
            stack.append(f.func)
            continue
        if not isinstance(f, types.FunctionType):
            continue
        if f.__code__ is code and f.__closure__ is not None:
            found.append(f.__closure__[cell].cell_contents)
        if (w := getattr(f, "__wrapped__", None)) is not None:
            stack.append(w)
        for c in f.__closure__ or ():
            try:
                v = c.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(v, (types.FunctionType, functools.partial)):
                stack.append(v)
    return found


@contextmanager
def without_compiler_imports() -> Iterator[None]:
    """Within it, torch's Python meta kernels do not import ``torch._dynamo`` (see the module
    docstring)."""
    code = _wrapper_code()
    if "torch._dynamo" in sys.modules or code is None:
        yield
        return
    cached = [f for f in disabled_functions(code) if not hasattr(f, CACHE)]
    for f in cached:
        setattr(f, CACHE, f)
    try:
        yield
    finally:
        for f in cached:
            if getattr(f, CACHE, None) is f:
                delattr(f, CACHE)
