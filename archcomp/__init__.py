"""archcomp: declarative neural-network architectures, checked, compiled and drawn.

The public names are imported when first used (PEP 562), so that ``archcomp --help`` and
``archcomp ops`` do not pay for the front end, and nothing here imports torch (``ArchModule``,
the class of every built model, imports it on first use)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archcomp.api import (
        build,
        from_pretrained,
        import_module,
        load,
        save,
        save_pretrained,
        summary,
        view,
    )
    from archcomp.backends.torch.module import ArchModule
    from archcomp.backends.torch.outputs import ModelOutput
    from archcomp.base.errors import Diagnostic, SpecError, UsageError
    from archcomp.base.version import __version__
    from archcomp.ir import Graph
    from archcomp.passes.pipeline import load_graph

__all__ = [
    "ArchModule",
    "Diagnostic",
    "Graph",
    "ModelOutput",
    "SpecError",
    "UsageError",
    "__version__",
    "build",
    "check",
    "draw",
    "from_pretrained",
    "import_module",
    "load",
    "load_graph",
    "save",
    "save_pretrained",
    "summary",
    "view",
]

_HOME = {
    **dict.fromkeys(
        [
            "build",
            "from_pretrained",
            "import_module",
            "load",
            "save",
            "save_pretrained",
            "summary",
            "view",
        ],
        "archcomp.api",
    ),
    **dict.fromkeys(("Diagnostic", "SpecError", "UsageError"), "archcomp.base.errors"),
    "Graph": "archcomp.ir",
    "ArchModule": "archcomp.backends.torch.module",
    "ModelOutput": "archcomp.backends.torch.outputs",
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
    """Validate a spec (a shipped name, path, YAML string or mapping; or the spec an artifact
    or a built model carries); return its checked graph."""
    from archcomp.api import graph_of

    return graph_of(spec, params)


def draw(spec_or_model: object, params: dict[str, object] | None = None, **options: object) -> Any:
    """Draw a spec, an artifact or a built model as the paper draws it; returns a
    ``graphviz.Digraph``.

    Options: ``expand``, ``depth``, ``shapes``, ``param_counts``, ``direction``, ``dropout``,
    ``max_boxes``, ``max_edges`` (see :func:`archcomp.backends.graphviz.draw` and docs/diagrams.md).
    """
    from archcomp.api import graph_of, is_artifact
    from archcomp.backends.graphviz import draw as _draw

    if is_artifact(spec_or_model):  # its embedded spec
        spec_or_model, params = graph_of(spec_or_model, params), None
    return _draw(spec_or_model, params, **options)  # type: ignore[arg-type]
