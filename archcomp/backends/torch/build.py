"""A checked graph -> a module on a device: resolve device and dtype, refuse a build that would
not fit, show allocation progress, compile (:func:`build_graph`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from archcomp.backends.torch.codegen import compile_graph
from archcomp.backends.torch.devices import (
    check_fits,
    estimate,
    fmt_bytes,
    parse_bytes,
    resolve_device,
    resolve_dtype,
)
from archcomp.backends.torch.module import ArchModule
from archcomp.base.errors import UsageError
from archcomp.ir import Graph

PROGRESS_THRESHOLD = 1 << 30  # show allocation progress above 1 GiB


def build_graph(
    g: Graph,
    device: Any = None,
    dtype: Any = None,
    seed: int | None = None,
    *,
    max_memory: int | str | None = None,
    progress: bool | None = None,
) -> ArchModule:
    """Compile an already checked graph (see :func:`archcomp.build`)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise UsageError(f"seed must be a non-negative int, found {seed!r}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    est = estimate(g, dt)
    budget = parse_bytes(max_memory) if max_memory is not None else None
    check_fits(est, dev, budget)
    show = progress
    if show is None:
        show = sys.stderr.isatty() and est.total_bytes >= PROGRESS_THRESHOLD
    reporter = _progress_printer() if show and dev.type != "meta" else None
    model = compile_graph(g, dev, dt, seed, reporter, est)
    if reporter is not None:
        print(file=sys.stderr)
    return model


def _progress_printer() -> Callable[[int, int], None]:
    last = [-1]

    def report(done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        if pct != last[0]:
            last[0] = pct
            print(
                f"\rallocating {fmt_bytes(done)} / {fmt_bytes(total)} ({pct}%)",
                end="",
                file=sys.stderr,
                flush=True,
            )

    return report
