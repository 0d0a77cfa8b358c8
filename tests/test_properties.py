"""Property tests: any character-level mutation of a valid spec ends in success or a clean,
located error. Structure-aware mutations of every spec are in tests/test_fuzz_specs.py."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archcomp.base.errors import SpecError, UsageError
from archcomp.passes.pipeline import load_graph

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [
    p
    for p in [
        *sorted((ROOT / "specs").glob("*.yaml")),
        *sorted((ROOT / "tests" / "specs" / "valid").glob("*.yaml")),
    ]
    if "imports" not in yaml.safe_load(p.read_text())
]


def _check_is_clean(text: str) -> None:
    try:
        load_graph(text)
    except SpecError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            assert d.message and d.code
            assert d.loc is not None
    except UsageError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.integers(min_value=0, max_value=10**6),
    st.text(alphabet=st.sampled_from(list("{}[]:-,'\"&*!|>#%@`\t\n ${}x0")), max_size=4),
)
def test_text_mutations_end_cleanly(seed: Path, pos: int, insert: str) -> None:
    text = seed.read_text()
    pos %= max(len(text), 1)
    _check_is_clean(text[:pos] + insert + text[pos + len(insert) :])


def test_there_are_seeds() -> None:
    assert SEEDS
