"""archcomp: declarative neural-network architectures, checked, compiled and drawn."""

from typing import Any

from archcomp.api import build, from_pretrained, load, save, save_pretrained, summary
from archcomp.base.errors import Diagnostic, SpecError, UsageError
from archcomp.base.version import __version__
from archcomp.ir import Graph
from archcomp.passes.pipeline import load_graph

__all__ = [
    "Diagnostic",
    "Graph",
    "SpecError",
    "UsageError",
    "__version__",
    "build",
    "check",
    "draw",
    "from_pretrained",
    "load",
    "load_graph",
    "save",
    "save_pretrained",
    "summary",
]


def check(spec: object, params: dict[str, object] | None = None) -> Graph:
    """Validate a spec (path, YAML string or mapping); return its checked graph."""
    return load_graph(spec, params)  # type: ignore[arg-type]


def draw(spec_or_model: object, params: dict[str, object] | None = None, **options: object) -> Any:
    """Draw a spec or built model as the paper draws it; returns a ``graphviz.Digraph``.

    Options: ``expand``, ``depth``, ``shapes``, ``param_counts``, ``direction``, ``dropout``,
    ``max_boxes``, ``max_edges`` (see :func:`archcomp.backends.graphviz.draw` and docs/diagrams.md).
    """
    from archcomp.backends.graphviz import draw as _draw

    return _draw(spec_or_model, params, **options)  # type: ignore[arg-type]
