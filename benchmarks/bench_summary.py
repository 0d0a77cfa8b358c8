"""Whole-process time of `archcomp summary llama` against `python -c "import torch"` (goal:
within 1.2x): what a user waits for at the prompt, imports included.

Run: .venv/bin/python benchmarks/bench_summary.py [--runs N] [SPEC ...]
Runs the two commands alternately N times (default 5) and prints the median wall and CPU
(user + system) time of each and the ratios. On a shared machine the absolute times move
with the load; the ratios move less, the CPU one least. Python's bytecode caches are used and
written, as an installed package has them (benchmarks/bench_startup.py times it too, among
the other commands).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``args`` (its output discarded)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, env=ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", default=["llama"])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch_cmd = [sys.executable, "-c", "import torch"]
    print(f"{'command':<28} {'wall s':>7} {'CPU s':>7} {'wall x torch':>13} {'CPU x torch':>12}")
    for spec in args.specs:
        cmd = [str(BIN / "archcomp"), "summary", spec]
        timed(cmd)  # writes the bytecode caches
        base, ours = [], []
        for _ in range(args.runs):  # alternate, so load changes hit both alike
            base.append(timed(torch_cmd))
            ours.append(timed(cmd))
        bw, bc = (statistics.median(t[i] for t in base) for i in (0, 1))
        ow, oc = (statistics.median(t[i] for t in ours) for i in (0, 1))
        print(f"{'python -c import torch':<28} {bw:>7.2f} {bc:>7.2f} {1.0:>13.2f} {1.0:>12.2f}")
        name = f"archcomp summary {spec}"
        print(f"{name:<28} {ow:>7.2f} {oc:>7.2f} {ow / bw:>13.2f} {oc / bc:>12.2f}")


if __name__ == "__main__":
    main()
