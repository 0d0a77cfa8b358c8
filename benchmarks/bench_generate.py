"""Greedy decoding: archcomp's ``generate`` against transformers' ``generate``, same weights.

    .venv/bin/python benchmarks/bench_generate.py [--repeat 4] [--rounds 2] [--threads N]
    .venv/bin/python benchmarks/bench_generate.py --compile      # also both sides compiled
    .venv/bin/python benchmarks/bench_generate.py --compile --skip-eager   # compiled only
    .venv/bin/python benchmarks/bench_generate.py --device cuda --dtype bfloat16 --compile

A random Llama (4 layers, d_model 256, 8 query / 2 key-value heads, SwiGLU 768, vocabulary
32000, RoPE theta 500000) is saved by transformers and loaded by ``archcomp.from_pretrained``;
batch 1, (prompt 64, new 64) and (prompt 512, new 128). Eager: archcomp's KV cache against
transformers' default (dynamic) cache. Compiled (``--compile``): ``generate(compile=True)``
against transformers' static cache with its forward compiled (``cache_implementation="static"``,
a ``compile_config`` that allows the CPU). ``--device cuda`` without a GPU prints why it is
skipped. The tokens of both sides are checked equal first; then each setting is timed
in ABBA order (drift hits both alike), the whole measurement ``--rounds`` times. Prints tokens
per second and the ratio of times archcomp / transformers; the goal is <= 1.00 on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import archcomp

SIZES = {"N": 4, "d_model": 256, "h": 8, "n_kv_heads": 2, "d_ff": 768, "vocab": 32000}
SETTINGS = ((64, 64), (512, 128))  # (prompt, new tokens)


def reference(dtype: torch.dtype, device: torch.device) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=SIZES["vocab"],
        hidden_size=SIZES["d_model"],
        intermediate_size=SIZES["d_ff"],
        num_hidden_layers=SIZES["N"],
        num_attention_heads=SIZES["h"],
        num_key_value_heads=SIZES["n_kv_heads"],
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = None  # every row runs to max_new_tokens
    model.generation_config.pad_token_id = 0
    return model.to(device, dtype)


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def sides(ref: Any, ours: Any, ids: torch.Tensor, new: int, compiled: bool) -> tuple[Any, Any]:
    """(archcomp, transformers) greedy generate of ``new`` tokens after ``ids``."""
    kw: dict[str, Any] = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False}
    if compiled:  # transformers compiles its forward over a static cache (on a CPU only when
        # the compile config says all devices)
        from transformers import CompileConfig

        config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
        config._compile_all_devices = True
        kw |= {"cache_implementation": "static", "compile_config": config}

    def theirs() -> torch.Tensor:
        with torch.inference_mode():
            return ref.generate(ids, attention_mask=torch.ones_like(ids), **kw)

    def mine() -> torch.Tensor:
        return ours.generate(ids, new, compile=compiled)

    return mine, theirs


def measure(mine: Any, theirs: Any, repeat: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of each, ABBA order, after one warm-up each."""
    mine(), theirs()
    a: list[float] = []
    b: list[float] = []
    for i in range(repeat):
        if i % 2:
            a.append(timed(mine, device))
            b.append(timed(theirs, device))
        else:
            b.append(timed(theirs, device))
            a.append(timed(mine, device))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4, help="timed runs per side and setting")
    ap.add_argument("--rounds", type=int, default=2, help="times the whole measurement runs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    ap.add_argument("--compile", action="store_true", help="also time both sides compiled")
    ap.add_argument("--skip-eager", action="store_true", help="with --compile: compiled only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA run skipped: torch sees no GPU on this machine")
        return
    ref = reference(dtype, device)
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(Path(tmp))
        ours = archcomp.from_pretrained(Path(tmp), device=device, dtype=dtype).eval()
    print(
        f"Llama {SIZES['N']} layers, d_model {SIZES['d_model']}, {SIZES['h']}/"
        f"{SIZES['n_kv_heads']} heads, vocab {SIZES['vocab']}; batch 1, greedy; {device}, "
        f"{args.dtype}, {torch.get_num_threads()} threads"
    )
    modes = ([] if args.skip_eager else [False]) + ([True] if args.compile else [])
    g = torch.Generator().manual_seed(1)
    for rnd in range(args.rounds):
        for compiled in modes:
            for prompt, new in SETTINGS:
                ids = torch.randint(0, SIZES["vocab"], (1, prompt), generator=g).to(device)
                mine, theirs = sides(ref, ours, ids, new, compiled)
                same = torch.equal(mine(), theirs())
                a, b = measure(mine, theirs, args.repeat, device)
                print(
                    f"round {rnd + 1} {'compiled' if compiled else 'eager   '} prompt {prompt:3} "
                    f"new {new:3}: archcomp {new / a:7.1f} tok/s, transformers {new / b:7.1f} "
                    f"tok/s, ratio of times {a / b:.2f} (goal <= 1.00); tokens "
                    f"{'identical' if same else 'DIFFER'}"
                )


if __name__ == "__main__":
    main()
