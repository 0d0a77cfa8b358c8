"""The diagram backend: IR -> Graphviz, in the style of the Transformer paper's figures.

``draw(spec)`` returns a ``graphviz.Digraph`` (shown inline in notebooks); ``save`` writes
SVG, PNG, PDF or DOT through ``dot`` under a time limit. See docs/diagrams.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import graphviz

from archcomp.backends.graphviz.boxes import (
    DEFAULT_MAX_BOXES,
    DEFAULT_MAX_EDGES,
    Drawing,
    DrawOptions,
)
from archcomp.backends.graphviz.emit import to_graphviz
from archcomp.backends.graphviz.plan import plan
from archcomp.backends.graphviz.render import (
    DEFAULT_MEMORY,
    DEFAULT_TIMEOUT,
    FORMATS,
    Diagram,
    RenderError,
    check_limits,
    dot_hash,
    read_stamp,
    run_dot,
)
from archcomp.base.errors import UsageError
from archcomp.base.fileio import write_bytes_atomic
from archcomp.ir import Graph

__all__ = [
    "FORMATS",
    "Diagram",
    "DrawOptions",
    "Drawing",
    "RenderError",
    "dot_hash",
    "draw",
    "graph_of",
    "plan",
    "read_stamp",
    "save",
    "to_graphviz",
]


def graph_of(spec_or_model: Any, params: Mapping[str, Any] | None = None) -> Graph:
    """A checked graph from a spec (path, YAML text, mapping), a Graph, or a built model."""
    if isinstance(spec_or_model, Graph):
        return spec_or_model
    for attr in ("graph", "archcomp_graph", "ir"):
        value = getattr(spec_or_model, attr, None)
        if isinstance(value, Graph):
            return value
    from archcomp.passes.pipeline import model_graph

    built = model_graph(spec_or_model, params)  # a model built by archcomp.build
    if built is not None:
        return built
    if isinstance(spec_or_model, (str, Path, Mapping)):
        from archcomp.passes.pipeline import load_graph

        return load_graph(spec_or_model, params)
    raise UsageError(
        f"draw() takes a spec (path, YAML text or mapping), a Graph or a built model, "
        f"not {type(spec_or_model).__name__}"
    )


def draw(
    spec_or_model: Any,
    params: Mapping[str, Any] | None = None,
    *,
    expand: Iterable[str] = (),
    depth: int | None = None,
    shapes: bool = False,
    param_counts: bool = False,
    direction: str = "auto",
    dropout: bool = False,
    max_boxes: int | None = None,
    max_edges: int | None = None,
) -> Diagram:
    """Draw a spec or model as the paper draws it; returns a :class:`Diagram` (a
    ``graphviz.Digraph``: SVG in notebooks; rendering it without Graphviz raises
    :class:`RenderError` with the install hint).

    ``params`` overrides spec params (as ``-p``); ``expand`` opens blocks or composite ops by
    name; ``depth`` opens nested blocks to that depth; ``shapes`` labels edges with tensor
    shapes; ``param_counts`` adds parameter counts to boxes. A diagram past ``max_boxes``
    boxes or ``max_edges`` edge segments (each edge counts the ranks it crosses) is refused.
    """
    if direction not in ("auto", "BT", "LR"):
        raise UsageError(f"direction must be auto, BT or LR, not {direction!r}")
    if depth is not None and depth < 0:
        raise UsageError(f"depth must be >= 0, found {depth}")
    if isinstance(expand, str):
        expand = (expand,)
    opts = DrawOptions(
        expand=tuple(expand),
        depth=depth,
        shapes=shapes,
        param_counts=param_counts,
        direction=direction,  # type: ignore[arg-type]
        dropout=dropout,
        max_boxes=DEFAULT_MAX_BOXES if max_boxes is None else max_boxes,
        max_edges=DEFAULT_MAX_EDGES if max_edges is None else max_edges,
    )
    return to_graphviz(plan(graph_of(spec_or_model, params), opts))


def save(
    diagram: graphviz.Digraph,
    path: str | Path,
    fmt: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    memory: int = DEFAULT_MEMORY,
) -> Path:
    """Render ``diagram`` to ``path`` (format from ``fmt`` or the suffix); returns the path.

    Raises :class:`RenderError` when ``dot`` is missing (the DOT source is then written next
    to ``path`` with a ``.dot`` suffix), fails, runs past ``timeout`` seconds or past
    ``memory`` bytes.
    """
    out = Path(path)
    fmt = fmt or out.suffix.lstrip(".") or "svg"
    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    try:
        check_limits(timeout, memory)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    source = diagram.source
    try:
        data = run_dot(source, fmt, timeout=timeout, memory=memory)  # before anything is written
    except RenderError as exc:
        if exc.missing or exc.timed_out:
            write_bytes_atomic(out.with_suffix(".dot"), source.encode())
        raise
    write_bytes_atomic(out, data)  # makes missing folders, and removes them on failure
    return out
