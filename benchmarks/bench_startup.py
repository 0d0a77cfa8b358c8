"""Whole-process start-up of the command line: ``archcomp --help``, ``ops``, ``specs``,
``check`` of a small spec and ``check gpt2`` (goal: <= 0.35 s), against ``python -c pass``
and ``python -c "import torch"``.

Run: .venv/bin/python benchmarks/bench_startup.py [--runs N]

With hyperfine installed it runs hyperfine (wall clock, mean of N runs); otherwise each
command runs N times in a subprocess and the median wall time and the median CPU time
(user + system, from ``wait4``) are printed. On a busy machine the CPU time is the steadier
figure. The ratios are against ``python -c pass`` and ``python -c "import torch"``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ARCHCOMP = [PY, "-m", "archcomp"]
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [PY, "-c", "pass"],
    'python -c "import torch"': [PY, "-c", "import torch"],
    "archcomp --help": [*ARCHCOMP, "--help"],
    "archcomp ops": [*ARCHCOMP, "ops"],
    "archcomp specs": [*ARCHCOMP, "specs"],
    "archcomp check mlp.yaml": [*ARCHCOMP, "check", str(ROOT / "specs" / "mlp.yaml")],
    "archcomp check gpt2": [*ARCHCOMP, "check", "gpt2"],
}


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``cmd`` (its output discarded)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def with_subprocess(runs: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for name, cmd in COMMANDS.items():
        run(cmd)  # warm the file cache
        times = [run(cmd) for _ in range(runs)]
        out[name] = (
            statistics.median(t[0] for t in times),
            statistics.median(t[1] for t in times),
        )
    return out


def with_hyperfine(hyperfine: str, runs: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmds = [" ".join(f"'{a}'" if " " in a else a for a in c) for c in COMMANDS.values()]
        argv = [hyperfine, "-N", "--warmup", "1", "--runs", str(runs)]
        subprocess.run(
            [*argv, "--export-json", str(report), *cmds],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        results = json.loads(report.read_text())["results"]
    return {
        name: (r["mean"], r["user"] + r["system"])
        for name, r in zip(COMMANDS, results, strict=True)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-hyperfine", action="store_true", help="time with subprocess anyway")
    args = ap.parse_args()
    hyperfine = None if args.no_hyperfine else shutil.which("hyperfine")
    timed = with_hyperfine(hyperfine, args.runs) if hyperfine else with_subprocess(args.runs)
    how = "hyperfine, mean" if hyperfine else f"subprocess, median of {args.runs}"
    base = timed["python -c pass"][0]
    torch = timed['python -c "import torch"'][0]
    print(f"{'command':<28} {'wall s':>7} {'CPU s':>7} {'/ pass':>7} {'/ torch':>8}   ({how})")
    for name, (wall, cpu) in timed.items():
        print(f"{name:<28} {wall:>7.3f} {cpu:>7.3f} {wall / base:>7.1f} {wall / torch:>8.2f}")


if __name__ == "__main__":
    main()
