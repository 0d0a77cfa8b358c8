"""Structure-aware fuzzing of every spec in specs/, imported block libraries included.

Each example copies nothing: the spec tree is copied once per module, one file (a model spec
or a block library it imports) is replaced by a mutation of its parsed YAML (values swapped for
hostile ones, keys deleted, renamed or duplicated, lists extended, payloads inserted), and
``archcomp.frontend.build.load_graph`` must end in success or a clean, located error. The budget is
fixed (``ARCHCOMP_FUZZ_EXAMPLES``, default 150, derandomized so CI runs the same examples);
raise it to fuzz longer, e.g. ``ARCHCOMP_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_specs.py``.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archcomp.base.errors import SpecError, UsageError
from archcomp.passes.pipeline import load_graph

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
MODELS = sorted(p.relative_to(SPECS) for p in SPECS.glob("*.yaml"))
LIBRARIES = sorted(p.relative_to(SPECS) for p in (SPECS / "blocks").glob("*.yaml"))
EXAMPLES = int(os.environ.get("ARCHCOMP_FUZZ_EXAMPLES", "150"))

HOSTILE = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30, 10**6]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
    st.sampled_from(
        [
            "os.system",
            "__import__('archcomp_canary')",
            "${__import__('os')}",
            "${10 ** 10 ** 10}",
            "${d_model * 0}",
            "${1/0}",
            "${index}",
            "${N + 1}",
            "_target_",
            "__class__",
            "forward",
            "self",
            "../../etc/passwd",
            "/etc/passwd",
            "https://example.com/x.yaml",
            "blocks/transformer.yaml",
            "blocks/missing.yaml",
            "[:, -1]",
            "x",
            "B",
            "encoder",
            "encoder.layers",
            "multi_head_attention",
            "linear",
            "\x00",
            "\u202e",
        ]
    ),
    st.lists(st.integers(min_value=-2, max_value=70000), max_size=4),
    st.dictionaries(
        st.sampled_from(["id", "op", "in", "repeat", "_target_", "path"]),
        st.integers(min_value=-1, max_value=100000),
        max_size=2,
    ),
)
KEYS = [
    "id",
    "op",
    "in",
    "repeat",
    "shared",
    "tie",
    "init",
    "imports",
    "blocks",
    "outputs",
    "params",
    "inputs",
    "nodes",
    "_target_",
    "output",
    "N",
    "d_model",
    "ouputs",
]


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
def mutation(draw: st.DrawFn) -> tuple[Path, Path, str]:
    """(model spec to check, file to replace, its mutated text)."""
    model = draw(st.sampled_from(MODELS))
    text = (SPECS / model).read_text()
    target = model
    if "imports" in text and draw(st.booleans()):
        target = draw(st.sampled_from(LIBRARIES))
    doc = copy.deepcopy(yaml.safe_load((SPECS / target).read_text()))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "rename", "duplicate", "insert"]))
        if action == "replace":
            parent[key] = draw(HOSTILE)
        elif action == "delete":
            del parent[key]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = parent.pop(key)
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(draw(st.integers(0, len(parent))), copy.deepcopy(parent[key]))
        elif action == "insert" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(HOSTILE)
    return model, target, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("fuzz") / "specs"
    shutil.copytree(SPECS, dest)
    return dest


def test_mutations_of_every_spec_are_covered() -> None:
    assert {"transformer.yaml", "gpt2.yaml", "bert_base.yaml"} <= {str(m) for m in MODELS}
    assert LIBRARIES


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=mutation())
def test_mutated_specs_end_cleanly(tree: Path, case: tuple[Path, Path, str]) -> None:
    model, target, text = case
    original = (tree / target).read_bytes()
    (tree / target).write_text(text)
    try:
        load_graph(tree / model)
    except SpecError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            assert d.code and d.message and d.loc is not None, d
            assert d.loc.line >= 1 and d.loc.col >= 1, d
    except UsageError as exc:
        assert str(exc)
    finally:
        (tree / target).write_bytes(original)
