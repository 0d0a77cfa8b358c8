"""The package's layers stand one above the other: no import cycle, no import upwards.

The rules and the layer table live in tests/layer_rules.py (docs/architecture.md explains them).
"""

from __future__ import annotations

import ast
from pathlib import Path

from layer_rules import layer_of, package_sources, problems, read_edges

ROOT = Path(__file__).resolve().parent.parent


def test_archcomp_has_no_import_cycle_and_no_upward_import() -> None:
    sources = package_sources(ROOT)
    edges = read_edges(sources)
    assert len(edges) > 100  # the reader sees the imports (a broken reader would pass anything)
    assert problems(edges) == []


def test_every_file_belongs_to_a_layer() -> None:
    for path in package_sources(ROOT):
        layer_of(path)  # raises for a file outside every layer


def test_planted_violations_are_reported() -> None:
    sources = {
        "archcomp/__init__.py": "",
        "archcomp/ir/__init__.py": "",
        "archcomp/ir/graph.py": "from archcomp.frontend.loader import Program\n",
        "archcomp/frontend/__init__.py": "",
        "archcomp/frontend/loader.py": "def f():\n    from archcomp.ir import graph\n",
        "archcomp/backends/__init__.py": "",
        "archcomp/backends/torch/__init__.py": "",
        "archcomp/backends/torch/a.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from archcomp.backends.graphviz import b\n",
        "archcomp/backends/graphviz/__init__.py": "",
        "archcomp/backends/graphviz/b.py": "from . import c\n",
        "archcomp/backends/graphviz/c.py": "from .b import x\n",
        "archcomp/base/__init__.py": "",
        "archcomp/base/errors.py": "import archcomp.api\n",
        "archcomp/api.py": "",
    }
    found = problems(read_edges(sources))
    assert any("ir/graph.py:1: layer 'ir' imports archcomp/frontend/loader.py" in p for p in found)
    assert any(p.startswith("import cycle:") and "ir/graph.py" in p for p in found)
    assert any("torch/a.py:3: imports archcomp/backends/graphviz/b.py" in p for p in found)
    assert any("graphviz/b.py -> archcomp/backends/graphviz/c.py" in p for p in found)
    assert any("base/errors.py:1: layer 'base' imports archcomp/api.py" in p for p in found)


def test_architecture_picture_is_up_to_date() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from architecture import diagram
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    drawn = (ROOT / "docs" / "architecture.dot").read_text()
    assert diagram().source == drawn, "run: .venv/bin/python scripts/architecture.py"


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in non-test modules (tests/lowering.py, numerics.py, equivalence.py,
    spec_library.py, ...): importing a test module collects its tests twice over."""
    tests = Path(__file__).resolve().parent
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [
                f"{path.relative_to(tests)}: {n}"
                for n in names
                if n.split(".")[-1].startswith("test_") or n.startswith("tests.")
            ]
    assert found == []
