"""Whole-process time of `archcomp summary llama` against `python -c "import torch"` (goal:
within 1.2x): what a user waits for at the prompt, imports included.

Run: .venv/bin/python benchmarks/bench_summary.py [--runs N] [SPEC ...]
Runs the two commands alternately N times (default 5) and prints the median of each and the
ratio. On a shared machine the absolute times move with the load; the ratio moves less.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", default=["llama"])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch_cmd = [sys.executable, "-c", "import torch"]
    print(f"{'command':<28} {'median s':>9} {'x import torch':>15}")
    for spec in args.specs:
        cmd = [str(BIN / "archcomp"), "summary", spec]
        base, ours = [], []
        for _ in range(args.runs):  # alternate, so load changes hit both alike
            base.append(wall(torch_cmd))
            ours.append(wall(cmd))
        b, o = statistics.median(base), statistics.median(ours)
        print(f"{'python -c import torch':<28} {b:>9.2f} {1.0:>15.2f}")
        print(f"{'archcomp summary ' + spec:<28} {o:>9.2f} {o / b:>15.2f}")


if __name__ == "__main__":
    main()
