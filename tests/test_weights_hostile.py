"""Hostile weight files: each variant of a valid artifact (pickles renamed .safetensors, bad
header lengths, overlapping offsets, duplicate names, shape/dtype/name mismatches, hash
mismatches, truncation, tampered embedded specs) is loaded with ``archcomp.load`` in the
canary process and must be refused with its specific reason: no traceback, nothing
unpickled or executed, the file itself untouched.
"""

from __future__ import annotations

from typing import Any

import pytest
from hostile_support.corpus import WEIGHT_CASES, Job, good_artifact, judge, run_jobs, weight_jobs
from hostile_support.selection import selected_params


@pytest.fixture(scope="module")
def ran(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Job, dict[str, Any]]]:
    """The selected tests' cases, run once in the canary process (all of them when the whole
    module runs, one when ``-k`` picks one)."""
    tmp = tmp_path_factory.mktemp("weights")
    jobs = weight_jobs(tmp, good_artifact(tmp))
    good = tmp / "good.safetensors"
    jobs.append(Job("weights/good:load", "load", path=str(good), cwd=str(tmp), exit=0))
    chosen = selected_params(request, "name")
    if "test_every_weight_case_is_listed" not in chosen:
        wanted = set(chosen["test_hostile_weight_file_is_refused"])
        if "test_the_good_artifact_loads" in chosen:
            wanted.add("good")
        jobs = [j for j in jobs if j.id.split("/")[1].split(":")[0] in wanted]
    results = run_jobs(jobs, tmp) if jobs else []
    return {j.id: (j, r) for j, r in zip(jobs, results, strict=True)}


def test_the_good_artifact_loads(ran: dict[str, tuple[Job, dict[str, Any]]]) -> None:
    _, result = ran["weights/good:load"]
    assert result["code"] == 0, result["stderr"]
    assert not result["events"] and not result["traceback"]


@pytest.mark.parametrize("name", WEIGHT_CASES)
def test_hostile_weight_file_is_refused(
    name: str, ran: dict[str, tuple[Job, dict[str, Any]]]
) -> None:
    job, result = ran[f"weights/{name}:load"]
    verdict = judge(job, result)
    assert verdict.clean, f"{name}: {verdict.problems}\n{result['stderr']}"


def test_every_weight_case_is_listed(ran: dict[str, tuple[Job, dict[str, Any]]]) -> None:
    made = {jid.split("/")[1].split(":")[0] for jid in ran} - {"good"}
    assert made == set(WEIGHT_CASES)
