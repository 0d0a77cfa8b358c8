"""Whole-process start-up of the command line: ``archcomp --help``, ``ops``, ``specs``,
``check`` of a small spec, ``check gpt2`` (goal: <= 0.35 s) and ``summary llama`` (goal:
within 1.2x of ``python -c "import torch"``), against ``python -c pass`` and ``python -c
"import torch"``.

Run: .venv/bin/python benchmarks/bench_startup.py [--runs N]

Each command runs N times in a subprocess, in rounds: the commands in order, then in the
reverse order (ABBA, so that a load that rises or falls during the run hits all alike); the
median wall time and the median CPU time (user + system, from ``wait4``) are printed. On a
busy machine the CPU time is the steadier figure: the ratios to ``import torch`` are given
for both. With ``--hyperfine`` (and hyperfine installed) hyperfine times them instead (wall
clock, mean of N runs). Python's bytecode caches are used and written (the first, untimed
run writes them), as an installed package has them, even where ``PYTHONDONTWRITEBYTECODE``
is set.
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
    "archcomp summary llama": [*ARCHCOMP, "summary", "llama"],
}
TORCH = 'python -c "import torch"'
# as installed: bytecode caches read and written
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``cmd`` (its output discarded)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=ENV
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def with_subprocess(runs: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of each command over ``runs`` runs, in ABBA rounds."""
    names = list(COMMANDS)
    for name in names:
        run(COMMANDS[name])  # warm the file cache and write the bytecode caches
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for i in range(runs):
        for name in names if i % 2 == 0 else reversed(names):
            times[name].append(run(COMMANDS[name]))
    return {
        name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
        for name, ts in times.items()
    }


def with_hyperfine(hyperfine: str, runs: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmds = [" ".join(f"'{a}'" if " " in a else a for a in c) for c in COMMANDS.values()]
        argv = [hyperfine, "-N", "--warmup", "1", "--runs", str(runs)]
        subprocess.run(
            [*argv, "--export-json", str(report), *cmds],
            check=True,
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
        )
        results = json.loads(report.read_text())["results"]
    return {
        name: (r["mean"], r["user"] + r["system"])
        for name, r in zip(COMMANDS, results, strict=True)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hyperfine", action="store_true", help="time with hyperfine if installed")
    args = ap.parse_args()
    hyperfine = shutil.which("hyperfine") if args.hyperfine else None
    timed = with_hyperfine(hyperfine, args.runs) if hyperfine else with_subprocess(args.runs)
    how = "hyperfine, mean" if hyperfine else f"subprocess, median of {args.runs}, ABBA"
    base = timed["python -c pass"]
    torch = timed[TORCH]
    print(
        f"{'command':<28} {'wall s':>7} {'CPU s':>7} {'/ pass':>7} {'/ torch':>8}"
        f" {'CPU / torch':>12}"
    )
    for name, (wall, cpu) in timed.items():
        print(
            f"{name:<28} {wall:>7.3f} {cpu:>7.3f} {wall / base[0]:>7.1f} {wall / torch[0]:>8.2f}"
            f" {cpu / torch[1]:>12.2f}"
        )
    wall, cpu = timed["archcomp summary llama"]
    print(f"({how})")
    print(
        f"summary llama / import torch: {wall / torch[0]:.2f}x wall, {cpu / torch[1]:.2f}x CPU"
        " (goal <= 1.2x)"
    )
    wall, cpu = timed["archcomp check gpt2"]
    print(f"check gpt2: {wall:.3f} s wall, {cpu:.3f} s CPU (goal <= 0.35 s)")


if __name__ == "__main__":
    main()
