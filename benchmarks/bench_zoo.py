"""Every decoder family with a shipped mapping against transformers (sdpa where it has it):
archcomp.from_pretrained of the family's checkpoint vs the transformers model that saved it.

    .venv/bin/python benchmarks/bench_zoo.py [--families qwen2,phi3] [--repeat 10] [--threads N]
    .venv/bin/python benchmarks/bench_zoo.py --threads 1 --cpu-time   # on a shared machine
    .venv/bin/python benchmarks/bench_zoo.py --device cuda --dtype bfloat16

The families are tests/hf_models.py's FAMILIES whose transformers class is a causal LM
(``*ForCausalLM``, ``*LMHeadModel``), so a family another group adds is measured too. Each is
its small test config widened 8x (hidden, intermediate and head sizes; heads and layers as in
the test), vocabulary 8192, context 256; batch 4, length 128. The transformers model is saved
and loaded back by archcomp with no spec and no mapping, so both hold the same weights (the
logits are checked first). Measured alternately in one run (ABBA order, so drift and cache
warmth hit both sides alike): forward (eval, no_grad) and forward + backward (cross-entropy,
no optimizer step). Denormals are flushed. Prints the ratio archcomp / transformers per
family and the attention transformers ran (sdpa, or eager where it has no sdpa: Gemma 2);
the goal is <= 1.00 each. ``--cpu-time`` times each call by the process's CPU time instead of
the wall clock: on a machine other processes share, time waiting for a core is not counted
(with ``--threads 1``, the time of the one thread that computes; CPU only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import archcomp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hf_models import FAMILIES, Family, quiet, shipped

WIDTHS = (  # config fields that scale with the width (those a family's config has)
    "hidden_size",
    "n_embd",
    "intermediate_size",
    "n_inner",
    "head_dim",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "kv_lora_rank",
    "q_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
)
FIXED = {"vocab_size": 8192, "max_position_embeddings": 256, "n_positions": 256}
B, T = 4, 128


def decoders() -> list[str]:
    """The shipped families whose transformers class is a causal language model."""
    names = []
    for name in shipped():
        cls = FAMILIES[name].cls().__name__
        if cls.endswith(("ForCausalLM", "LMHeadModel")):
            names.append(name)
    return names


def reference(family: Family) -> Any:
    """The family's transformers model at the benchmark's sizes, sdpa where it has it."""
    cfg = family.make().config
    for field in WIDTHS:
        if isinstance(getattr(cfg, field, None), int):
            setattr(cfg, field, 8 * getattr(cfg, field))
    for field, value in FIXED.items():
        if hasattr(cfg, field):
            setattr(cfg, field, value)
    cfg.use_cache = False
    cls = family.cls()
    try:
        return cls._from_config(cfg, attn_implementation="sdpa")
    except (ValueError, ImportError):  # no sdpa (Gemma 2's soft cap, a state-space model)
        return cls._from_config(cfg, attn_implementation="eager")


CLOCK: list[Callable[[], float]] = [time.perf_counter]  # --cpu-time: time.process_time


def timed(fn: Callable[[], object]) -> float:
    clock = CLOCK[0]
    t = clock()
    fn()
    return clock() - t


def measure(fns: tuple[Callable[[], object], Callable[[], object]], repeat: int) -> float:
    """Median time of ours / median time of theirs, alternating which runs first."""
    ours, theirs = fns
    for _ in range(2):  # warm up
        ours(), theirs()
    mine: list[float] = []
    other: list[float] = []
    for i in range(repeat):
        if i % 2:
            mine.append(timed(ours))
            other.append(timed(theirs))
        else:
            other.append(timed(theirs))
            mine.append(timed(ours))
    return statistics.median(mine) / statistics.median(other)


def bench(
    name: str, dev: torch.device, dtype: torch.dtype, repeat: int
) -> tuple[float, float, str]:
    """(forward ratio, forward + backward ratio, transformers' attention) of one family."""
    family = FAMILIES[name]
    torch.manual_seed(0)
    ref = reference(family)
    with tempfile.TemporaryDirectory() as folder:
        ref.save_pretrained(folder)
        model = archcomp.from_pretrained(folder, dtype="float32")
    ref.to(dev, dtype), model.to(dev, dtype)
    vocab = ref.config.vocab_size
    ids = torch.randint(0, vocab, (B, T), device=dev)
    labels = torch.randint(0, vocab, (B, T), device=dev)
    x = {model.input_names[0]: ids}

    def ours() -> torch.Tensor:
        out = model(**x)
        return out if isinstance(out, torch.Tensor) else out[model.output_names[0]]

    def theirs() -> torch.Tensor:
        return family.hf_call(ref, x)["logits"]

    ref.eval(), model.eval()
    with torch.no_grad():
        got, want = ours().float(), theirs().float()
    err = ((got - want).norm() / want.norm()).item()
    assert err < (1e-4 if dtype == torch.float32 else 2e-2), f"{name}: logits differ ({err:.3g})"

    def forward(fn: Callable[[], torch.Tensor], m: nn.Module) -> Callable[[], object]:
        def run() -> object:
            m.eval()
            with torch.no_grad():
                out = fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    def train_step(fn: Callable[[], torch.Tensor], m: nn.Module) -> Callable[[], object]:
        def run() -> object:
            m.train()
            m.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(fn().reshape(-1, vocab).float(), labels.reshape(-1))
            loss.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return loss

        return run

    fwd = measure((forward(ours, model), forward(theirs, ref)), repeat)
    both = measure((train_step(ours, model), train_step(theirs, ref)), repeat)
    return fwd, both, str(ref.config._attn_implementation)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="", help="comma-separated (default: every decoder)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    ap.add_argument(
        "--cpu-time", action="store_true", help="time by process CPU time, not the wall clock"
    )
    args = ap.parse_args()
    if args.cpu_time:
        if args.device != "cpu":
            ap.error("--cpu-time measures the CPU: use it with --device cpu")
        CLOCK[0] = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    quiet()
    names = args.families.split(",") if args.families else decoders()
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    clock = "CPU time" if args.cpu_time else "wall clock"
    print(f"batch {B}, length {T}; {dev}, {args.dtype}, {clock}")
    print("archcomp / transformers (goal <= 1.00)")
    print(f"{'family':12} {'forward':>8} {'fwd + bwd':>10}  transformers' attention")
    for name in names:
        fwd, both, attn = bench(name, dev, dtype, args.repeat)
        print(f"{name:12} {fwd:8.2f} {both:10.2f}  {attn}")


if __name__ == "__main__":
    main()
