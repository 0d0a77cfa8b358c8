"""archcomp.distributed on 2 CPU processes (gloo): FSDP2 and DDP equal a single-process run
after one optimizer step; a meta-built sharded model initialises to the unsharded build's
values exactly; DCP round trip, gathered artifact and sharded artifact load are exact.

One launch of tests/distributed_support.py runs every check (about 15 s); each test reads its
part of the two ranks' reports. Planted bugs (a wrong seed, a skipped tie) run there too and
must be caught.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

SUPPORT = Path(__file__).parent / "distributed_support.py"
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, str(SUPPORT), str(out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    files = [out / f"report-{r}.json" for r in range(2)]
    got = [json.loads(f.read_text()) if f.exists() else {} for f in files]
    for r in got:  # a check's own failure first: it explains a crash that follows it
        assert "error" not in r, r.get("error")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return got


@pytest.mark.parametrize("spec", ["gpt2", "transformer", "llama"])
def test_meta_sharded_init_equals_unsharded_build(reports: list[dict[str, Any]], spec: str) -> None:
    # gpt2: tied wte/lm_head; transformer: three-way tie, sinusoid buffers; llama: rotary
    # buffers inside the FSDP units. Same kernels, same seeds: bitwise.
    for r in reports:
        assert r[f"init_{spec}"] == 0.0


def test_frozen_parameters_and_buffers_shard_and_scalars_are_refused(
    reports: list[dict[str, Any]],
) -> None:
    for r in reports:
        assert r["init_frozen"] == 0.0
        assert r["frozen_grad"] == {"table.weight": False, "lin.weight": True, "lin.bias": True}
        assert r["scalar"] == (
            "FSDP2 cannot shard a scalar parameter (table.weight): give it shape [1], or train "
            "the model with DDP"
        )


def test_sharded_init_keeps_the_tie(reports: list[dict[str, Any]]) -> None:
    assert all(r["init_tied"] for r in reports)


def test_planted_bugs_are_caught(reports: list[dict[str, Any]]) -> None:
    for r in reports:
        assert r["planted_seed"] > 0.1  # initialised from another seed: values differ
        planted = r["planted_tie"]  # lm_head untied before sharding: refused or different
        assert (isinstance(planted, str) and "lm_head.weight" in planted) or planted > 0.1


@pytest.mark.parametrize("strategy", ["fsdp", "ddp", "fsdp_ac"])
def test_one_step_equals_single_process(reports: list[dict[str, Any]], strategy: str) -> None:
    # Each rank runs half the batch; the tolerance is the numerics rule for the reference's
    # longest rounding chain plus the ranks' averaging (tests/numerics.py).
    for r in reports:
        got = r[strategy]
        assert got["grad_names"]
        assert got["tied"]
        assert got["grad_err"] <= got["tol"], got
        assert got["weight_err"] <= got["tol"], got


def test_dcp_round_trip_exact(reports: list[dict[str, Any]]) -> None:
    for r in reports:
        assert r["dcp"] == 0.0
        assert r["dcp_tied"]


def test_gathered_artifact_is_archcomp_save(reports: list[dict[str, Any]]) -> None:
    assert reports[0]["gather_bytes_equal"]  # byte for byte what archcomp.save writes
    assert reports[0]["gather_load"] == 0.0  # and archcomp.load reads it back


def test_load_artifact_sharded_exact(reports: list[dict[str, Any]]) -> None:
    for r in reports:
        assert r["load_artifact"] == 0.0


def test_summary_per_rank_is_what_rank_0_holds(reports: list[dict[str, Any]]) -> None:
    from distributed_support import GPT2

    import archcomp

    est = archcomp.summary("gpt2", GPT2, world_size=2, optimizer="adamw").per_rank
    assert est is not None
    held = reports[0]["held"]  # rank 0 holds the larger shard of an odd-sized dim 0
    assert est.param_bytes == held["param_bytes"]
    assert est.grad_bytes == held["grad_bytes"]
    assert est.optimizer_bytes == held["optimizer_bytes"]


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_example_trains_with_torchrun(strategy: str) -> None:
    import os

    from distributed_support import free_port

    example = Path(__file__).parent.parent / "examples" / "train_gpt2.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += ["--master_addr=127.0.0.1", f"--master_port={free_port()}", str(example)]
    cmd += ["--strategy", strategy, "--steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{strategy} on 2 x cpu" in proc.stdout
    losses = [
        float(line.split()[3]) for line in proc.stdout.splitlines() if line.startswith("step")
    ]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


def test_shard_without_a_process_group_is_a_usage_error() -> None:
    import archcomp
    import archcomp.distributed

    model = archcomp.build("gpt2", {"vocab": 8, "context": 4, "d_model": 8, "h": 2, "N": 1})
    with pytest.raises(archcomp.UsageError, match="init_process_group"):
        archcomp.distributed.shard(model, reshard_after_forward=True)
