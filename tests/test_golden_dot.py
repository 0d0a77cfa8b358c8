"""Golden DOT of every shipped spec's figure, so that a change to the drawing is a reviewed
diff of tests/golden/specs/*.dot.

Regenerate them (and review ``git diff tests/golden/specs``) with
``ARCHCOMP_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden_dot.py``
(scripts/regen.sh runs it). Drawing needs no Graphviz: the DOT text is compared.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archcomp.backends.graphviz import draw
from archcomp.frontend.build import load_source

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "specs"
UPDATE = os.environ.get("ARCHCOMP_UPDATE_GOLDEN") == "1"
COMMAND = "ARCHCOMP_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden_dot.py"


def shipped_specs() -> list[Path]:
    """Every model spec that ships (specs/*.yaml with nodes; block libraries have none)."""
    return [p for p in sorted((ROOT / "specs").glob("*.yaml")) if load_source(p).spec.nodes]


@pytest.mark.parametrize("spec", shipped_specs(), ids=lambda p: p.stem)
def test_figure_dot_matches_its_golden_file(spec: Path) -> None:
    source = draw(spec).source
    assert draw(spec).source == source  # deterministic: the same spec, the same bytes
    path = GOLDEN / f"{spec.stem}.dot"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        return
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run {COMMAND}"
    assert source == path.read_text(), (
        f"the figure of {spec.relative_to(ROOT)} changed: review it, then run {COMMAND}"
    )


def test_no_golden_file_outlives_its_spec() -> None:
    names = {p.stem for p in shipped_specs()}
    stale = sorted(p.name for p in GOLDEN.glob("*.dot") if p.stem not in names)
    if UPDATE:
        for name in stale:
            (GOLDEN / name).unlink()
        return
    assert not stale, f"golden files of specs that no longer ship: {stale}; run {COMMAND}"
