"""A checked graph -> a module on a device: resolve device and dtype, refuse a build that would
not fit, compile with allocation and initialisation progress (:func:`build_graph`)."""

from __future__ import annotations

from typing import Any

from archcomp.backends.torch.codegen import compile_graph
from archcomp.backends.torch.devices import (
    Estimate,
    check_fits,
    estimate,
    parse_bytes,
    resolve_device,
    resolve_dtype,
)
from archcomp.backends.torch.module import ArchModule
from archcomp.base.errors import UsageError
from archcomp.base.progress import showing, task
from archcomp.ir import Graph


def build_graph(
    g: Graph,
    device: Any = None,
    dtype: Any = None,
    seed: int | None = None,
    *,
    max_memory: int | str | None = None,
    progress: bool | None = None,
    params_on_meta: bool = False,
) -> ArchModule:
    """Compile an already checked graph (see :func:`archcomp.build`).

    ``params_on_meta``: allocate only the modules that hold buffers; the parameters stay on
    meta for the caller to fill (how :mod:`archcomp.checkpoints` loads published weights)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise UsageError(f"seed must be a non-negative int, found {seed!r}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    est = estimate(g, dt)
    if params_on_meta:
        est = Estimate(0, est.buffers, 0, est.buffer_bytes)
    budget = parse_bytes(max_memory) if max_memory is not None else None
    check_fits(est, dev, budget)
    if dev.type == "meta" or params_on_meta:  # nothing (or only buffers) to show
        return compile_graph(g, dev, dt, seed, None, est, params_on_meta=params_on_meta)
    with showing(progress), task("allocating and initialising weights", est.total_bytes) as tick:
        return compile_graph(g, dev, dt, seed, lambda done, total: tick(done), est)
