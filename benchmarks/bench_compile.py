"""Compile time: the GPT-3-sized spec (specs/gpt3.yaml) to a module on the meta device, against
constructing the same modules by hand on meta. Goal: archcomp adds <= 25%.

    .venv/bin/python benchmarks/bench_compile.py [--repeat 10]

archcomp's time covers everything from the spec file: YAML, validation, expansion, shape
inference, fx code generation and module construction. The hand-written side constructs the
same submodules (torch.nn.Linear / LayerNorm / Embedding / Dropout and the same attention and
positional modules) under ``torch.device("meta")`` and ties the LM head.

archcomp skips torch.nn's default initialisation on meta, where it fills nothing (about half
of the hand-written side's time). So two ratios are printed: against the modules as a user
writes them (the goal), and against the same modules built with that initialisation skipped
too, which isolates what archcomp's front end and code generation add.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import archcomp
from archcomp.backends.torch.init import meta_init_skipped
from archcomp.nn.attention import MultiHeadAttention
from archcomp.nn.positional import LearnedPositionalEncoding

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "gpt3.yaml"
VOCAB, CONTEXT, D, H, N, P = 50257, 2048, 12288, 96, 96, 0.1


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D, 4 * D)
        self.proj = nn.Linear(4 * D, D)
        self.drop = nn.Dropout(P)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(D)
        self.attn = MultiHeadAttention(D, H, dropout=P, causal=True)
        self.attn_drop = nn.Dropout(P)
        self.ln_2 = nn.LayerNorm(D)
        self.mlp = MLP()


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, D)
        self.wpe = LearnedPositionalEncoding(D, CONTEXT)
        self.drop = nn.Dropout(P)
        self.h_ = nn.ModuleList(Block() for _ in range(N))
        self.ln_f = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight


def by_hand() -> nn.Module:
    with torch.device("meta"):
        return GPT()


def by_hand_no_init() -> nn.Module:
    with torch.device("meta"), meta_init_skipped():
        return GPT()


def by_archcomp() -> nn.Module:
    return archcomp.build(SPEC, device="meta")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    ref_n = sum(p.numel() for p in by_hand().parameters())
    ours_n = sum(p.numel() for p in by_archcomp().parameters())  # also warms imports
    assert ref_n == ours_n, (ref_n, ours_n)
    sides = (by_hand, by_hand_no_init, by_archcomp)
    times: dict[Callable[[], nn.Module], list[float]] = {fn: [] for fn in sides}
    for i in range(args.repeat):  # ABBA order, so drift hits every side alike
        for fn in sides if i % 2 == 0 else sides[::-1]:
            gc.collect()  # each side starts from the same heap
            t = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - t)
    h, n, o = (statistics.median(times[fn]) for fn in sides)
    print(f"GPT-3 sizes on meta: {ours_n:,} parameters (median of {args.repeat})")
    print(f"by hand:                  {h * 1000:8.1f} ms")
    print(f"by hand, init skipped:    {n * 1000:8.1f} ms")
    print(f"archcomp:                 {o * 1000:8.1f} ms (spec file -> module)")
    print(f"ratio archcomp / hand: {o / h:.2f} (goal <= 1.25)")
    print(f"ratio archcomp / hand with init skipped: {o / n:.2f} (archcomp's own overhead)")


if __name__ == "__main__":
    main()
