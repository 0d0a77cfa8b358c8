"""archcomp: declarative neural-network architectures, checked, compiled and drawn."""

from archcomp.api import build, load, save, summary
from archcomp.check import load_graph
from archcomp.errors import Diagnostic, SpecError, UsageError
from archcomp.ir import Graph

__version__ = "0.1.0"

__all__ = [
    "Diagnostic",
    "Graph",
    "SpecError",
    "UsageError",
    "build",
    "check",
    "load",
    "load_graph",
    "save",
    "summary",
]


def check(spec: object, params: dict[str, object] | None = None) -> Graph:
    """Validate a spec (path, YAML string or mapping); return its checked graph."""
    return load_graph(spec, params)  # type: ignore[arg-type]
