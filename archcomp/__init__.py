"""archcomp: declarative neural-network architectures, checked, compiled and drawn.

The public names are imported when first used (PEP 562), so that ``archcomp --help`` and
``archcomp ops`` do not pay for the front end, and nothing here imports torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOME = {
    **dict.fromkeys(
        ("build", "from_pretrained", "load", "save", "save_pretrained", "summary"), "archcomp.api"
    ),
    **dict.fromkeys(("Diagnostic", "SpecError", "UsageError"), "archcomp.base.errors"),
    "Graph": "archcomp.ir",
    "__version__": "archcomp.base.version",  # reading package metadata: a tenth of a second
    "load_graph": "archcomp.passes.pipeline",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'archcomp' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def check(spec: object, params: dict[str, object] | None = None) -> Graph:
    """Validate a spec (path, YAML string or mapping); return its checked graph."""
    from archcomp.passes.pipeline import load_graph

    return load_graph(spec, params)  # type: ignore[arg-type]


def draw(spec_or_model: object, params: dict[str, object] | None = None, **options: object) -> Any:
    """Draw a spec or built model as the paper draws it; returns a ``graphviz.Digraph``.

    Options: ``expand``, ``depth``, ``shapes``, ``param_counts``, ``direction``, ``dropout``,
    ``max_boxes``, ``max_edges`` (see :func:`archcomp.backends.graphviz.draw` and docs/diagrams.md).
    """
    from archcomp.backends.graphviz import draw as _draw

    return _draw(spec_or_model, params, **options)  # type: ignore[arg-type]
