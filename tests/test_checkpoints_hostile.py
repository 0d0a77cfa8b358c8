"""Hostile checkpoint folders (tests/hostile_support/checkpoint_corpus.py, and the cases of
several files or a command line of tests/hostile_support/checkpoint_attacks.py) through
``archcomp convert`` (or ``export``) in the canary process: each ends in its specific clean
error, with no traceback, nothing unpickled or executed, no output file, the checkpoint
untouched, within 60 s of CPU and 4 GiB.
"""

from __future__ import annotations

from typing import Any

import pytest
from hostile_support.checkpoint_attacks import ATTACKS
from hostile_support.checkpoint_corpus import CHECKPOINT_CASES, checkpoint_jobs
from hostile_support.corpus import Job, judge, run_jobs
from hostile_support.selection import selected_params


@pytest.fixture(scope="module")
def ran(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Job, dict[str, Any]]]:
    """The selected tests' cases, run once in the canary process (all of them when the whole
    module runs, one when ``-k`` picks one)."""
    tmp = tmp_path_factory.mktemp("hostile_checkpoints")
    chosen = selected_params(request, "name")
    wanted = set(chosen["test_hostile_checkpoint_is_refused"])
    if "test_the_good_checkpoint_converts" in chosen:
        wanted.add("good")
    jobs = [j for j in checkpoint_jobs(tmp) if j.id.split("/")[1].split(":")[0] in wanted]
    results = run_jobs(jobs, tmp) if jobs else []
    return {j.id.split("/")[1].split(":")[0]: (j, r) for j, r in zip(jobs, results, strict=True)}


def test_the_good_checkpoint_converts(ran: dict[str, tuple[Job, dict[str, Any]]]) -> None:
    _, result = ran["good"]
    assert result["code"] == 0, result["stderr"]
    assert not result["events"] and not result["traceback"]


@pytest.mark.parametrize("name", sorted([*CHECKPOINT_CASES, *ATTACKS]))
def test_hostile_checkpoint_is_refused(
    name: str, ran: dict[str, tuple[Job, dict[str, Any]]]
) -> None:
    job, result = ran[name]
    verdict = judge(job, result)
    assert verdict.clean, f"{name}: {verdict.problems}\n{result['stderr']}"
