"""Worker of tests/test_distributed.py: 2 CPU processes (gloo) run every check once and each
writes a JSON report; the tests read the reports. Run as a script:
``python tests/distributed_support.py OUT_DIR`` (it spawns the processes itself).

Every comparison is against a single-process reference computed in the same process:
an unsharded ``archcomp.build`` with the same seed, one SGD step on the whole batch.
Planted bugs (a wrong seed, a broken tie) are run too, and their reports must show failure.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from numerics import RoundingChains, relative_error

WORLD = 2
SEED = 7
GPT2 = {
    "vocab": 65,
    "context": 16,
    "d_model": 32,
    "h": 4,
    "N": 2,
    "dropout": 0.0,
}  # 65: an odd dim 0 to shard
INIT_CASES = {
    "gpt2": GPT2,  # tied wte/lm_head
    "transformer": {"N": 1, "d_model": 16, "d_ff": 32, "h": 2, "vocab": 50, "dropout": 0.0},
    "llama": {
        "N": 2,
        "d_model": 16,
        "d_ff": 32,
        "h": 2,
        "n_kv_heads": 1,
        "vocab": 50,
        "context": 16,
    },  # rotary buffers inside the blocks
}
B, T, LR = 4, 8, 0.1
# a frozen parameter and a persistent buffer beside a trained one
FROZEN = """archcomp: 1
name: frozen
inputs:
  x: [B, 8]
nodes:
  - {id: table, op: parameter, shape: [8], trainable: false}
  - {id: bias, op: buffer, shape: [8], init_value: 0.5}
  - {id: lin, op: linear, in: x, out_features: 8}
  - {id: a, op: add, in: [lin, table]}
  - {id: y, op: add, in: [a, bias]}
outputs: y
"""


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, GPT2["vocab"], (B, T + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


def loss_of(model: torch.nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(ids)  # (b, T, vocab)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1)
    )


def full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    t = t.detach()
    return t.full_tensor() if isinstance(t, DTensor) else t


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: full(v) for k, v in model.state_dict().items()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if set(a) != set(b):
        return float("inf")
    return max(
        float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a
    )


def reference_step(activation_checkpointing: bool = False) -> dict[str, Any]:
    """The single-process run: whole batch, grads and weights after one SGD step, and the
    tolerance the numerics rule gives them."""
    import archcomp

    model = archcomp.build("gpt2", GPT2, seed=SEED)
    ids, targets = batch()
    with RoundingChains() as chains:
        loss_of(model, ids, targets).backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=LR).step()
    # + the ranks' averaging: one more sum of WORLD terms
    tol = chains.tolerance(torch.float32)
    return {"grads": grads, "weights": state(model), "k": tol.k + WORLD, "tol": None}


def compare_step(model: torch.nn.Module, ref: dict[str, Any], rank: int) -> dict[str, Any]:
    """One SGD step on this rank's half of the batch; relative errors against ``ref``."""
    from numerics import Tolerance

    ids, targets = batch()
    per = B // WORLD
    loss_of(
        model, ids[rank * per : (rank + 1) * per], targets[rank * per : (rank + 1) * per]
    ).backward()
    grads = {k: full(p.grad) for k, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=LR).step()
    weights = state(model)
    tol = Tolerance(torch.float32, ref["k"]).value
    scale = max(float(g.double().pow(2).mean().sqrt()) for g in ref["grads"].values())
    gerr = {k: relative_error(grads[k], ref["grads"][k], floor=scale) for k in ref["grads"]}
    werr = {k: relative_error(weights[k], ref["weights"][k]) for k in ref["weights"]}
    return {
        "tol": tol,
        "grad_names": sorted(grads) == sorted(ref["grads"]),
        "grad_err": max(gerr.values()),
        "weight_err": max(werr.values()),
        "tied": model.lm_head.weight is model.wte.weight,
    }


def checks(rank: int, out: Path) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    import archcomp
    import archcomp.distributed as ad
    from archcomp.distributed.fsdp import materialize

    report: dict[str, Any] = {}

    # A meta-built sharded model initialises to the unsharded values, exactly.
    for name, params in INIT_CASES.items():
        ref = state(archcomp.build(name, params, seed=SEED))
        m = ad.shard(archcomp.build(name, params, device="meta", seed=SEED))
        report[f"init_{name}"] = max_diff(state(m), ref)
        if name == "gpt2":
            report["init_tied"] = m.lm_head.weight is m.wte.weight
            materialize(m, seed=SEED + 1)  # planted bug: the wrong seed
            report["planted_seed"] = max_diff(state(m), ref)
    # Frozen parameters and buffers shard and initialise exactly; a scalar is refused.
    import archcomp.base.errors as errors

    m = ad.shard(archcomp.build(FROZEN, device="meta", seed=SEED))
    report["init_frozen"] = max_diff(state(m), state(archcomp.build(FROZEN, seed=SEED)))
    report["frozen_grad"] = {n: p.requires_grad for n, p in m.named_parameters()}
    scalar = FROZEN.replace("shape: [8], trainable: false", "shape: [], trainable: false")
    try:
        ad.shard(archcomp.build(scalar, device="meta"))
        report["scalar"] = "sharded"
    except errors.UsageError as exc:
        report["scalar"] = str(exc)
    # Planted bug: the tie skipped (lm_head gets a weight of its own before sharding).
    m = archcomp.build("gpt2", GPT2, device="meta", seed=SEED)
    m.lm_head.weight = torch.nn.Parameter(torch.empty_like(m.wte.weight))
    try:
        ad.shard(m)
        report["planted_tie"] = max_diff(state(m), state(archcomp.build("gpt2", GPT2, seed=SEED)))
    except RuntimeError as exc:
        report["planted_tie"] = f"refused: {exc}"

    ref = reference_step()
    # FSDP2 from a meta build, DDP on a CPU build, FSDP2 with activation checkpointing.
    report["fsdp"] = compare_step(
        ad.shard(archcomp.build("gpt2", GPT2, device="meta", seed=SEED)), ref, rank
    )
    ddp = DistributedDataParallel(archcomp.build("gpt2", GPT2, seed=SEED))
    report["ddp"] = compare_step(_DDPView(ddp), ref, rank)
    ac = archcomp.build("gpt2", GPT2, device="meta", seed=SEED, activation_checkpointing=True)
    report["fsdp_ac"] = compare_step(ad.shard(ac), ref, rank)

    # What one rank holds, for the summary's per-rank estimate: its shards and AdamW state.
    m = ad.shard(archcomp.build("gpt2", GPT2, device="meta", seed=SEED))
    loss_of(m, *batch()).backward()
    opt = torch.optim.AdamW(m.parameters())
    opt.step()
    report["held"] = {
        "param_bytes": sum(_local_bytes(p) for p in m.parameters()),
        "grad_bytes": sum(_local_bytes(p.grad) for p in m.parameters()),
        "optimizer_bytes": sum(_local_bytes(v) for st in opt.state.values() for v in st.values()),
    }

    # DCP round trip; artifacts gathered and loaded.
    m = ad.shard(archcomp.build("gpt2", GPT2, device="meta", seed=SEED))
    want = state(m)
    ad.save_sharded(m, out / "dcp")
    other = ad.shard(archcomp.build("gpt2", GPT2, device="meta", seed=SEED + 5))
    ad.load_sharded(other, out / "dcp")
    report["dcp"] = max_diff(state(other), want)
    report["dcp_tied"] = other.lm_head.weight is other.wte.weight

    ad.gather_artifact(m, out / "gathered.safetensors")
    if rank == 0:
        plain = archcomp.build("gpt2", GPT2, seed=SEED)
        archcomp.save(plain, out / "plain.safetensors")
        same = (out / "gathered.safetensors").read_bytes() == (
            out / "plain.safetensors"
        ).read_bytes()
        report["gather_bytes_equal"] = same
        report["gather_load"] = max_diff(state(archcomp.load(out / "gathered.safetensors")), want)
    dist.barrier()
    loaded = ad.shard(archcomp.build("gpt2", GPT2, device="meta", seed=SEED + 9))
    ad.load_artifact_sharded(loaded, out / "plain.safetensors")
    report["load_artifact"] = max_diff(state(loaded), want)
    return report


def _local_bytes(t: torch.Tensor) -> int:
    from torch.distributed.tensor import DTensor

    local = t.to_local() if isinstance(t, DTensor) else t
    return local.numel() * local.element_size()


class _DDPView(torch.nn.Module):
    """DDP's module called through DDP, with the compiled module's attributes for the tie
    check."""

    def __init__(self, ddp: torch.nn.Module) -> None:
        super().__init__()
        self.ddp = ddp
        self.lm_head = ddp.module.lm_head
        self.wte = ddp.module.wte

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.ddp(ids)

    def named_parameters(self, *a: Any, **k: Any) -> Any:  # the module's names
        return self.ddp.module.named_parameters(*a, **k)

    def parameters(self, *a: Any, **k: Any) -> Any:
        return self.ddp.module.parameters(*a, **k)

    def state_dict(self, *a: Any, **k: Any) -> Any:
        return self.ddp.module.state_dict(*a, **k)


def worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120)
    )
    try:
        report = checks(rank, Path(out))
    except Exception:
        report = {"error": traceback.format_exc()}
    # Written before the teardown, so a crash there still leaves what the checks found.
    (Path(out) / f"report-{rank}.json").write_text(json.dumps(report, indent=1))
    # FSDP- and fx-built modules sit in reference cycles; left to the interpreter's exit, their
    # process-group references outlive destroy_process_group and gloo's threads abort the
    # process ("terminate called without an active exception", SIGABRT), one run in three.
    gc.collect()
    if "error" not in report:
        dist.barrier()  # neither rank closes its sockets while the other is mid-collective
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    mp.spawn(worker, args=(free_port(), sys.argv[1]), nprocs=WORLD, join=True)
