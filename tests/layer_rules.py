"""archcomp's layers and the imports between its files, read with ast (nothing is imported).

:data:`LAYERS` is the declared order, lowest first: a file may import files of its own layer
and of the layers below it, never above. Every import counts: top-level, inside a function
(the lazy imports that keep torch out of ``archcomp check``) and under ``TYPE_CHECKING``.
Python's implicit run of a parent package's ``__init__`` is not an import edge; an explicit
``from archcomp.x import name`` is an edge to ``archcomp/x/name.py`` when that file exists,
else to ``archcomp/x/__init__.py``. Used by tests/test_layers.py and by
scripts/architecture.py (which draws docs/architecture.svg).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

# (layer, what it holds, the paths of its files relative to the repository, as prefixes)
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("base", "diagnostics, located documents, atomic writes, version", ("archcomp/base/",)),
    ("nn", "torch modules that generated code calls", ("archcomp/nn/",)),
    ("ir", "symbolic dims, tensor types, graph, what an op is", ("archcomp/ir/",)),
    ("ops", "the op registry and every op's declaration", ("archcomp/ops/",)),
    ("frontend", "YAML text -> spec -> params -> expanded graph", ("archcomp/frontend/",)),
    ("passes", "checks over the graph; the pipeline", ("archcomp/passes/",)),
    ("backends", "torch code generation, artifacts; Graphviz", ("archcomp/backends/",)),
    (
        "checkpoints",
        "published weights: mapping files, convert, export",
        ("archcomp/checkpoints/",),
    ),
    (
        "distributed",
        "torch.distributed: FSDP2 by repeated blocks, sharded weights",
        ("archcomp/distributed/",),
    ),
    (
        "importer",
        "torch modules traced back into spec text",
        ("archcomp/importer/",),
    ),
    ("api", "the public Python API", ("archcomp/api.py", "archcomp/__init__.py")),
    ("cli", "the archcomp command", ("archcomp/cli/", "archcomp/__main__.py")),
)

# Layers that sit side by side: neither may import the other. (nn is torch runtime code,
# base is archcomp's ground floor; backends/torch and backends/graphviz are peers.)
PEERS: tuple[tuple[str, str], ...] = (
    ("base", "nn"),
    ("archcomp/backends/torch/", "archcomp/backends/graphviz/"),
)


@dataclass(frozen=True)
class Edge:
    """``src`` imports ``dst`` at ``line`` (both paths relative to the repository)."""

    src: str
    dst: str
    line: int


def layer_of(path: str) -> str:
    for name, _, prefixes in LAYERS:
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in prefixes):
            return name
    raise KeyError(f"{path} belongs to no layer: add it to LAYERS in tests/layer_rules.py")


def rank(layer: str) -> int:
    return [name for name, _, _ in LAYERS].index(layer)


def _module_file(module: str, files: Iterable[str]) -> str | None:
    base = module.replace(".", "/")
    known = set(files)
    for cand in (f"{base}.py", f"{base}/__init__.py"):
        if cand in known:
            return cand
    return None


def _package_of(path: str) -> str:
    parts = path[: -len(".py")].split("/")
    return ".".join(parts[:-1])


def read_edges(sources: Mapping[str, str]) -> list[Edge]:
    """Every import from one archcomp file to another, by path -> source text."""
    edges: list[Edge] = []
    for path, text in sources.items():
        tree = ast.parse(text, filename=path)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    pkg = _package_of(path).split(".")
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    module = ".".join([*pkg, module] if module else pkg)
                targets = [f"{module}.{a.name}" for a in node.names]
                targets = [
                    t if _module_file(t, sources) else module for t in targets
                ]  # a submodule, or a name of the module itself
            for t in targets:
                if not (t == "archcomp" or t.startswith("archcomp.")):
                    continue
                dst = _module_file(t, sources)
                if dst is not None and dst != path:
                    edges.append(Edge(path, dst, node.lineno))
    return edges


def problems(edges: Iterable[Edge]) -> list[str]:
    """Cycles between files, and imports against :data:`LAYERS` or :data:`PEERS`."""
    edges = list(edges)
    out: list[str] = []
    g = nx.DiGraph()
    g.add_edges_from((e.src, e.dst) for e in edges)
    for comp in nx.strongly_connected_components(g):
        if len(comp) > 1:
            cycle = [u for u, _ in nx.find_cycle(g.subgraph(comp))]
            out.append("import cycle: " + " -> ".join([*cycle, cycle[0]]))
    for e in edges:
        src, dst = layer_of(e.src), layer_of(e.dst)
        if rank(dst) > rank(src) and (src, dst) not in PEERS and (dst, src) not in PEERS:
            out.append(
                f"{e.src}:{e.line}: layer '{src}' imports {e.dst} of the higher layer '{dst}'"
            )
        for a, b in PEERS:
            for x, y in ((a, b), (b, a)):
                if _in(e.src, src, x) and _in(e.dst, dst, y):
                    out.append(f"{e.src}:{e.line}: imports {e.dst}; '{x}' and '{y}' are peers")
    return sorted(set(out))


def _in(path: str, layer: str, group: str) -> bool:
    return layer == group or (group.endswith("/") and path.startswith(group))


def package_sources(root: Path) -> dict[str, str]:
    """Every ``.py`` file under ``root / 'archcomp'``, by path relative to ``root``."""
    return {
        p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted((root / "archcomp").rglob("*.py"))
    }
