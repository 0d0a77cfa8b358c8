"""Published weights: GPT-2 small (124M parameters) from a transformers checkpoint folder.

    .venv/bin/python benchmarks/bench_checkpoints.py [--repeat 7] [--folder DIR]

Builds a GPT-2-small-sized checkpoint locally (``GPT2LMHeadModel(GPT2Config())`` with random
weights, ``save_pretrained``; kept in ``build/bench_gpt2_small`` for the next run) and prints:

- time: ``archcomp.from_pretrained`` against transformers' own ``from_pretrained`` of the same
  folder, in the same process, ABBA order, median of ``--repeat``. Goal: ratio <= 2.
- memory: ``archcomp convert`` of the folder in a fresh process: the peak resident memory
  it adds over the process before converting (torch and archcomp imported), sampled every
  millisecond, against the checkpoint's size. Goal: ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh process by main(): the peak RSS of `archcomp convert` over its baseline.
_MEASURE = r"""
import json, os, sys, threading, time
import torch, safetensors, archcomp
from archcomp.cli import main

page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
base = rss()
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.001)
t = threading.Thread(target=sample, daemon=True)
t.start()
code = main(["convert", sys.argv[1], "-o", sys.argv[2], "--force"])
done.set()
t.join()
peak[0] = max(peak[0], rss())
print(json.dumps({"code": code, "base": base, "peak": peak[0]}))
"""


def make_checkpoint(folder: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--folder", type=Path, default=ROOT / "build" / "bench_gpt2_small")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    quiet_transformers()
    from transformers import GPT2LMHeadModel

    import archcomp

    folder: Path = args.folder
    if not (folder / "model.safetensors").is_file():
        print(f"writing a random GPT-2 small checkpoint to {folder} ...", flush=True)
        make_checkpoint(folder)
    size = (folder / "model.safetensors").stat().st_size

    def ours() -> object:
        return archcomp.from_pretrained(folder)

    def theirs() -> object:
        return GPT2LMHeadModel.from_pretrained(folder)

    ids = torch.randint(0, 50257, (1, 32))
    with torch.no_grad():  # both load the same weights (and warm the page cache)
        diff = (ours()(ids) - theirs()(ids).logits).abs().max().item()  # type: ignore[operator,attr-defined]
    times: dict[Callable[[], object], list[float]] = {ours: [], theirs: []}
    for i in range(args.repeat):  # ABBA order, so drift hits both sides alike
        for fn in (theirs, ours) if i % 2 == 0 else (ours, theirs):
            gc.collect()
            t = time.perf_counter()
            model = fn()
            times[fn].append(time.perf_counter() - t)
            del model
    o, h = statistics.median(times[ours]), statistics.median(times[theirs])

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gpt2.safetensors"
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(folder), str(out)],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        if proc.returncode != 0:
            raise SystemExit(f"convert failed:\n{proc.stderr}")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        assert rec["code"] == 0, proc.stderr
    added = rec["peak"] - rec["base"]
    mib = 1 << 20
    print(f"GPT-2 small checkpoint: {size / mib:.0f} MiB ({folder})")
    print(f"max |logits difference| archcomp vs transformers: {diff:.2e}")
    print(f"transformers from_pretrained: {h * 1000:7.1f} ms (median of {args.repeat})")
    print(f"archcomp from_pretrained:     {o * 1000:7.1f} ms")
    print(f"time ratio archcomp / transformers: {o / h:.2f} (goal <= 2)")
    print(
        f"convert: {added / mib:.0f} MiB resident at peak over its {rec['base'] / mib:.0f} MiB "
        "before converting"
    )
    print(f"memory ratio peak added / checkpoint: {added / size:.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
