"""archcomp: declarative neural-network architectures, checked, compiled and drawn."""

from typing import TYPE_CHECKING, Any

from archcomp.api import (
    build,
    from_pretrained,
    import_module,
    load,
    save,
    save_pretrained,
    summary,
)
from archcomp.base.errors import Diagnostic, SpecError, UsageError
from archcomp.base.version import __version__
from archcomp.ir import Graph
from archcomp.passes.pipeline import load_graph

if TYPE_CHECKING:
    from archcomp.backends.torch.module import ArchModule


def __getattr__(name: str) -> Any:
    """``archcomp.ArchModule`` (the class of every built model), imported with torch on first
    use so that ``import archcomp`` stays light."""
    if name == "ArchModule":
        from archcomp.backends.torch.module import ArchModule

        return ArchModule
    raise AttributeError(f"module 'archcomp' has no attribute {name!r}")


__all__ = [
    "ArchModule",
    "Diagnostic",
    "Graph",
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
]


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
