"""The Python API of the compiler: :func:`build`, :func:`save`, :func:`load`, :func:`summary`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archcomp.base.errors import UsageError
from archcomp.frontend.build import SpecSource, load_graph

if TYPE_CHECKING:
    from torch import nn

    from archcomp.backends.torch.module import ArchModule
    from archcomp.backends.torch.summary import Summary
    from archcomp.ir import Graph

PROGRESS_THRESHOLD = 1 << 30  # show allocation progress above 1 GiB


def build(
    spec_or_path: SpecSource,
    params: Mapping[str, Any] | None = None,
    device: Any = None,
    dtype: Any = None,
    seed: int | None = None,
    *,
    max_memory: int | str | None = None,
    progress: bool | None = None,
) -> ArchModule:
    """Compile a spec into a ``torch.nn.Module`` (an :class:`ArchModule`).

    ``spec_or_path`` is a path, a YAML string or a parsed spec; ``params`` override the spec's
    params. The module is built directly on ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``,
    ``meta`` or ``auto``; default cpu) in ``dtype`` (default float32). With ``seed`` the weights
    are bit-identical across builds; without it they come from torch's global RNG.

    Before allocating, the parameter and buffer bytes are estimated from the graph; a build
    that would not fit the device's free memory (or ``max_memory`` bytes, e.g. ``"8GB"``) is
    refused with a :class:`UsageError`. ``progress`` prints allocation progress to stderr
    (default: for builds over 1 GiB when stderr is a terminal).
    """
    g = load_graph(spec_or_path, params)
    return build_graph(g, device, dtype, seed, max_memory=max_memory, progress=progress)


def build_graph(
    g: Graph,
    device: Any = None,
    dtype: Any = None,
    seed: int | None = None,
    *,
    max_memory: int | str | None = None,
    progress: bool | None = None,
) -> ArchModule:
    """Compile an already checked graph (see :func:`build`)."""
    from archcomp.backends.torch.codegen import compile_graph
    from archcomp.backends.torch.devices import (
        check_fits,
        estimate,
        parse_bytes,
        resolve_device,
        resolve_dtype,
    )

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
    from archcomp.backends.torch.devices import fmt_bytes

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


def save(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s weights as safetensors with its spec embedded (atomically)."""
    from archcomp.backends.torch.artifact import save_artifact

    return save_artifact(model, Path(path))


def load(path: str | Path, device: Any = None, dtype: Any = None) -> ArchModule:
    """Rebuild a model from an artifact written by :func:`save` or ``archcomp build``.

    The embedded spec's SHA-256 and the weights' SHA-256 are verified, and the names, shapes
    and dtypes of the stored tensors must match the rebuilt model exactly. Nothing is unpickled.
    """
    from archcomp.backends.torch.artifact import load_artifact

    return load_artifact(Path(path), device=device, dtype=dtype)


def summary(spec_or_path: SpecSource, params: Mapping[str, Any] | None = None) -> Summary:
    """Per-node table (op, output shape, params, MACs) and totals, built on the meta device."""
    from archcomp.backends.torch.summary import summarize

    g = load_graph(spec_or_path, params)
    model = build_graph(g, device="meta")
    return summarize(g, model)
