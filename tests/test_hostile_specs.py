"""Hostile specs: every case in tests/specs/hostile/, every generated one (invalid UTF-8,
NUL bytes, 50 MB, 10,000-deep nesting, alias bombs) and every scenario (several files, odd
names, the largest legal spec, command lines: tests/hostile_support/scenarios.py) is run
through the real CLI (check, build and draw, or its designated command) or ``archcomp.load`` in
the canary runner, each case in its own forked child, and must end in a clean, located error
(or, for a legal input, work): the exact expected stderr, the expected exit status, no
traceback, no shell/import/eval/network/unpickling (see tests/hostile_support/canary.py), no
output file left behind or overwritten, and within its bounds: at most 60 s of CPU and 4 GiB
of memory, measured per case (``wait4``; a case that hangs is killed).

Regenerate the expected sections with
``ARCHCOMP_UPDATE_GOLDEN=1 pytest tests/test_hostile_specs.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hostile_support.corpus import (
    CASES,
    GENERATED,
    HOSTILE,
    MARKER_LINE,
    ROOT,
    Job,
    generated_jobs,
    judge,
    run_jobs,
    spec_jobs,
)
from hostile_support.scenarios import SCENARIOS, scenario_jobs
from hostile_support.selection import selected_params

UPDATE = os.environ.get("ARCHCOMP_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def ran(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Job, dict[str, Any]]]:
    """The selected tests' cases, run once in the canary process: the whole corpus when the
    whole module runs (or test_every_case_was_measured does), one case when ``-k`` picks one."""
    tmp = tmp_path_factory.mktemp("hostile")
    by_case, by_name = selected_params(request, "case"), selected_params(request, "name")
    every = "test_every_case_was_measured" in by_case
    cases = CASES if every else by_case["test_hostile_spec"]
    generated = None if every else by_name["test_generated_hostile_input"]
    scenarios = None if every else by_name["test_hostile_scenario"]
    jobs = [j for case in cases for j in spec_jobs(case, tmp)] + generated_jobs(tmp, generated)
    jobs += scenario_jobs(tmp, scenarios)
    results = run_jobs(jobs, tmp) if jobs else []
    return {j.id: (j, r) for j, r in zip(jobs, results, strict=True)}


def _case_id(case: Path) -> str:
    return str(case.relative_to(HOSTILE).with_suffix(""))


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_hostile_spec(case: Path, ran: dict[str, tuple[Job, dict[str, Any]]]) -> None:
    name = _case_id(case)
    mine = {k: v for k, v in ran.items() if k.rsplit(":", 1)[0] == name}
    assert mine, name
    if UPDATE:
        _, first = next(iter(mine.values()))
        text = case.read_text()
        head = text.partition(MARKER_LINE)[0].rstrip("\n") + "\n"
        if text.strip() == "" or not text.partition(MARKER_LINE)[0].strip():
            head = ""
        body = "".join(
            "# " + line if line.strip() else "#\n"
            for line in first["stderr"].splitlines(keepends=True)
        )
        case.write_text(head + MARKER_LINE + "\n" + body)
        return
    assert MARKER_LINE in case.read_text(), f"{name}: run with ARCHCOMP_UPDATE_GOLDEN=1"
    for jid, (job, result) in mine.items():
        verdict = judge(job, result)
        assert verdict.clean, f"{jid}: {verdict.problems}\n{result['stderr']}"


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_hostile_input(name: str, ran: dict[str, tuple[Job, dict[str, Any]]]) -> None:
    mine = {k: v for k, v in ran.items() if k.startswith(f"generated/{name}:")}
    assert len(mine) == 3
    for jid, (job, result) in mine.items():
        verdict = judge(job, result)
        assert verdict.clean, f"{jid}: {verdict.problems}\n{result['stderr'][:2000]}"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_hostile_scenario(name: str, ran: dict[str, tuple[Job, dict[str, Any]]]) -> None:
    mine = {k: v for k, v in ran.items() if k.split(":", 1)[0] == name}
    assert mine, name
    for jid, (job, result) in mine.items():
        verdict = judge(job, result)
        assert verdict.clean, f"{jid}: {verdict.problems}\n{result['stderr'][:2000]}"


def test_every_case_was_measured(ran: dict[str, tuple[Job, dict[str, Any]]]) -> None:
    """The bounds are asserted by judge(); here, that every case has its measurements."""
    assert all({"cpu", "wall", "max_rss"} <= set(r) for _, r in ran.values())
    assert max(r["max_rss"] for _, r in ran.values()) > 50 << 20  # measured, not zero


def test_corpus_has_every_group() -> None:
    groups = {c.relative_to(HOSTILE).parts[0] for c in CASES}
    assert groups >= {"yaml", "schema", "graph", "resources", "security", "emit"}
    assert len(CASES) >= 100
    assert all(c.is_relative_to(ROOT) for c in CASES)


PROBES = ["import", "eval", "shell", "subprocess", "network", "unpickle", "file"]


def test_canary_sees_every_forbidden_action(tmp_path: Path) -> None:
    """The hook is not vacuous: each forbidden action, done on purpose, is recorded."""
    jobs = [Job(f"probe/{p}", "probe", path=p, cwd=str(tmp_path)) for p in PROBES]
    results = run_jobs(jobs, tmp_path)
    kinds = {r["id"].removeprefix("probe/"): {e["kind"] for e in r["events"]} for r in results}
    want = {"subprocess": "shell", "eval": "exec"}
    for probe in PROBES:
        assert want.get(probe, probe) in kinds[probe], (probe, kinds[probe])
    assert results[0]["canary_fired"]  # importing the payload module leaves its file too
