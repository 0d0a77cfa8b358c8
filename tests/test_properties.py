"""Property tests: any mutation of a valid spec ends in success or a clean, located error."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archcomp.check import load_graph
from archcomp.errors import SpecError, UsageError

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [
    p
    for p in [
        *sorted((ROOT / "specs").glob("*.yaml")),
        *sorted((ROOT / "tests" / "specs" / "valid").glob("*.yaml")),
    ]
    if "imports" not in yaml.safe_load(p.read_text())
]
RAW = [yaml.safe_load(p.read_text()) for p in SEEDS]

JUNK = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(
        [
            "",
            "x",
            "${",
            "${d_model * 0}",
            "${1/0}",
            "os.system",
            "__class__",
            "B",
            "fc1",
            "fc1.out",
            "${10**20}",
            "[:, -1]",
            "\n",
            "'",
            "\x01",
        ]
    ),
    st.lists(st.integers(min_value=-3, max_value=5), max_size=3),
    st.dictionaries(st.sampled_from(["x", "in", "op", "id"]), st.integers(), max_size=2),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> str:
    spec = copy.deepcopy(draw(st.sampled_from(RAW)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(spec) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = spec
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "rename", "duplicate"]))
        if action == "replace":
            parent[key] = draw(JUNK)
        elif action == "delete":
            del parent[key]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["in", "op", "id", "ouputs", "x", "repeat"]))] = parent.pop(
                key
            )
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return yaml.safe_dump(spec, sort_keys=False)


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
@given(mutated())
def test_structural_mutations_end_cleanly(text: str) -> None:
    _check_is_clean(text)


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
