"""Run the hostile corpus and the fuzzers; print what happened.

    .venv/bin/python scripts/hostile_report.py [--fuzz-seconds 30] [--examples 300]

Runs, in the canary runner (tests/hostile_support/canary.py, each case in its own forked
child): every spec case in tests/specs/hostile/ and the generated ones (through check, build
and draw), the scenarios (tests/hostile_support/scenarios.py: several files, odd names, the
largest legal spec, command lines), every hostile weight file (through archcomp.load), every
hostile checkpoint folder (through archcomp convert); then the loader fuzzer
(fuzz/fuzz_loader.py, built-in mutator) for --fuzz-seconds and the structure-aware hypothesis
suite (tests/test_fuzz_specs.py) with --examples examples. Prints, per source and in total:

    cases tried, clean, tracebacks, code executed, files lost, over bounds

"clean" is a clean, located error, or for a legal input a success; "over bounds" a case past
20 s of CPU or 4 GiB of memory (measured per case). Then the worst case's CPU time and peak
memory. A fuzz input that is a valid spec counts as clean (it is not an error to report). The
goal: every case clean, the other four zero. Exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "fuzz"), str(ROOT)]

from hostile_support.checkpoint_corpus import checkpoint_jobs  # noqa: E402
from hostile_support.corpus import (  # noqa: E402
    CASES,
    generated_jobs,
    good_artifact,
    judge,
    run_jobs,
    spec_jobs,
    weight_jobs,
)
from hostile_support.scenarios import scenario_jobs  # noqa: E402

Row = tuple[str, int, int, int, int, int, int]


def corpus_rows(tmp: Path) -> tuple[list[Row], list[str]]:
    spec = [j for case in CASES for j in spec_jobs(case, tmp)]
    gen = generated_jobs(tmp)
    scen = scenario_jobs(tmp)
    weights = weight_jobs(tmp, good_artifact(tmp))
    ckpts = [j for j in checkpoint_jobs(tmp) if not j.id.startswith("checkpoints/good:")]
    jobs = spec + gen + scen + weights + ckpts
    results = run_jobs(jobs, tmp)
    rows: list[Row] = []
    start = 0
    groups = (
        ("spec corpus", spec),
        ("generated", gen),
        ("scenarios", scen),
        ("weight files", weights),
        ("checkpoint folders", ckpts),
    )
    for label, group in groups:
        verdicts = [
            judge(j, r) for j, r in zip(group, results[start : start + len(group)], strict=True)
        ]
        for j, v in zip(group, verdicts, strict=True):
            if not v.clean:
                print(f"  NOT CLEAN {j.id}: {v.problems}", file=sys.stderr)
        start += len(group)
        rows.append(
            (
                label,
                len(verdicts),
                sum(v.clean for v in verdicts),
                sum(v.traceback for v in verdicts),
                sum(v.executed for v in verdicts),
                sum(v.lost for v in verdicts),
                sum(v.over for v in verdicts),
            )
        )
    cpu = max(zip(results, jobs, strict=True), key=lambda rj: rj[0]["cpu"])
    rss = max(zip(results, jobs, strict=True), key=lambda rj: rj[0]["max_rss"])
    worst = [
        f"worst CPU time: {cpu[0]['cpu']:.1f} s ({cpu[1].id}; wall {cpu[0]['wall']:.1f} s)",
        f"worst peak memory: {rss[0]['max_rss'] / 2**20:,.0f} MiB ({rss[1].id})",
    ]
    return rows, worst


def loader_fuzz_row(seconds: float) -> Row:
    from fuzz_loader import run_random

    counts = run_random(seconds, seed=0, quiet=False)
    total = counts["ok"] + counts["error"] + counts["crash"]
    return ("loader fuzz", total, counts["ok"] + counts["error"], counts["crash"], 0, 0, 0)


def hypothesis_row(examples: int) -> Row:
    env = dict(os.environ, ARCHCOMP_FUZZ_EXAMPLES=str(examples))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "test_fuzz_specs.py"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    failed = 0 if r.returncode == 0 else 1
    if failed:
        print(r.stdout[-3000:], file=sys.stderr)
    return ("hypothesis fuzz", examples, examples - failed, failed, 0, 0, 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--fuzz-seconds", type=float, default=30.0)
    ap.add_argument("--examples", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows, worst = corpus_rows(Path(tmp))
    rows.append(loader_fuzz_row(args.fuzz_seconds))
    rows.append(hypothesis_row(args.examples))
    total: Row = ("total", *(sum(r[i] for r in rows) for i in range(1, 7)))  # type: ignore[assignment]
    head = (
        "source",
        "cases tried",
        "clean",
        "tracebacks",
        "code executed",
        "files lost",
        "over bounds",
    )
    widths = [max(len(str(r[i])) for r in [head, *rows, total]) for i in range(7)]

    def line(r: tuple[object, ...]) -> str:
        return "  ".join(
            str(v).ljust(w) if i == 0 else str(v).rjust(w)
            for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )

    print(line(head))
    for r in rows:
        print(line(r))
    print(line(total))
    for text in worst:
        print(text)
    ok = total[1] == total[2] and total[3] == total[4] == total[5] == total[6] == 0
    sys.stderr.flush()
    print("every case a clean error, zero of the rest" if ok else "FAILURES: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
