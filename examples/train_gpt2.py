"""Train the GPT-2 spec on synthetic tokens across processes, with FSDP2 or DDP.

    torchrun --nproc_per_node=2 examples/train_gpt2.py --strategy fsdp        # CPU: gloo
    torchrun --nproc_per_node=8 examples/train_gpt2.py --strategy fsdp \\
        -p d_model=768 -p h=12 -p N=12 -p vocab=50257 -p context=1024       # GPUs: nccl

The backend is nccl when CUDA is available, else gloo. ``--strategy fsdp`` builds the model
on ``meta`` and lets :func:`archcomp.distributed.shard` materialise each rank's shards (the
weights equal an unsharded build with ``--seed``); ``ddp`` builds it whole on each rank.
Small params by default (seconds on a CPU); ``-p NAME=VALUE`` overrides any of the spec's.
Multi-node: see docs/scaling.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import archcomp
import archcomp.distributed

SMALL = {"vocab": 256, "context": 64, "d_model": 64, "h": 4, "N": 2, "dropout": 0.0}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--strategy", choices=("fsdp", "ddp"), default="fsdp")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=4, help="sequences per rank and step")
    p.add_argument("--seq", type=int, default=None, help="tokens per sequence (default: context)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--dtype", default=None, help="FSDP mixed precision compute dtype, e.g. bf16")
    return p.parse_args()


def params(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = dict(SMALL)
    for pair in pairs:
        name, _, value = pair.partition("=")
        out[name] = float(value) if "." in value else int(value)
    return out


def main() -> None:
    args = parse()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(
            max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        )
    p = params(args.param)
    ac = args.activation_checkpointing
    if args.strategy == "fsdp":
        model = archcomp.build(
            "gpt2", p, device="meta", seed=args.seed, activation_checkpointing=ac
        )
        model = archcomp.distributed.shard(model, mixed_precision=args.dtype)
        step_model = model
    else:
        model = archcomp.build(
            "gpt2", p, device=device, seed=args.seed, activation_checkpointing=ac
        )
        step_model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    seq = args.seq or int(p["context"])
    gen = torch.Generator().manual_seed(args.seed * 1000 + rank)  # each rank its own data
    if rank == 0:
        n = sum(t.numel() for t in model.parameters())
        print(f"gpt2 {p}: {n:,} parameters, {args.strategy} on {world} x {device.type}")
    for step in range(args.steps):
        t0 = time.perf_counter()
        tokens = torch.randint(0, int(p["vocab"]), (args.batch, seq + 1), generator=gen)
        ids, targets = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
        logits = step_model(ids)  # (batch, seq, vocab)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        avg = loss.detach().clone()
        dist.all_reduce(avg, op=dist.ReduceOp.SUM)
        if rank == 0:
            ms = (time.perf_counter() - t0) * 1000
            print(f"step {step}: loss {float(avg) / world:.4f} ({ms:.0f} ms)", flush=True)
    # The model and DDP's reducer go before their process group: torn down after it, gloo can
    # hang or abort. Built modules sit in reference cycles, so only gc.collect() frees them.
    del step_model, model, opt
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
