"""One FSDP2 training step on 2 CPU processes (gloo): archcomp.distributed.shard against the
same compiled model wrapped by hand with ``fully_shard`` on each block and the root.

    .venv/bin/python benchmarks/bench_fsdp.py [--repeat 20]

Both sides hold the same weights (the hand-wrapped one is built on the CPU with the same
seed; shard() materialises a meta build), and run the same step: forward, cross-entropy,
backward, SGD. Measured alternately (ABBA) on both ranks together, denormals flushed.
Prints the median step time of each and the ratio shard / by hand; the goal is <= 1.05.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import socket
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

PARAMS = {"vocab": 1024, "context": 64, "d_model": 128, "h": 4, "N": 4, "dropout": 0.0}
B, T = 4, 64


def worker(rank: int, port: int, repeat: int) -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=300)
    )
    from torch.distributed.fsdp import fully_shard

    import archcomp
    import archcomp.distributed

    ours = archcomp.distributed.shard(archcomp.build("gpt2", PARAMS, device="meta", seed=0))
    hand = archcomp.build("gpt2", PARAMS, seed=0)
    for block in hand.h_:
        fully_shard(block)
    fully_shard(hand)
    sides: dict[str, tuple[Any, torch.optim.Optimizer]] = {
        "shard": (ours, torch.optim.SGD(ours.parameters(), lr=1e-3)),
        "by hand": (hand, torch.optim.SGD(hand.parameters(), lr=1e-3)),
    }
    gen = torch.Generator().manual_seed(rank)
    tokens = torch.randint(0, PARAMS["vocab"], (B, T + 1), generator=gen)
    ids, targets = tokens[:, :-1], tokens[:, 1:]

    def step(name: str) -> float:
        model, opt = sides[name]
        dist.barrier()
        t0 = time.perf_counter()
        logits = model(ids)  # (B, T, vocab)
        F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dist.barrier()
        return time.perf_counter() - t0

    for name in sides:  # warm-up
        step(name)
        step(name)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(repeat):
        order = ["shard", "by hand"] if i % 2 == 0 else ["by hand", "shard"]  # ABBA
        for name in order:
            times[name].append(step(name))
    if rank == 0:
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"{k:>8}: {v * 1000:.1f} ms per step (median of {repeat})")
        print(f"ratio shard / by hand: {med['shard'] / med['by hand']:.3f} (goal <= 1.05)")
    sides.clear()  # freed before the process group (docs/scaling.md, tearing down)
    del ours, hand
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, args.repeat), nprocs=2, join=True)


if __name__ == "__main__":
    main()
