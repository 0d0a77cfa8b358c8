"""Fuzz target for the spec loader: any bytes -> success or a clean SpecError/UsageError.

With atheris installed (``pip install atheris``), coverage-guided::

    .venv/bin/python fuzz/fuzz_loader.py fuzz/corpus -max_total_time=300

Without it, the same target under random structure-blind mutations (byte flips, inserts of
YAML punctuation, splices between seeds) for a given time; seeds are specs/**/*.yaml and
tests/specs/{valid,invalid,hostile}::

    .venv/bin/python fuzz/fuzz_loader.py --seconds 60 [--seed N]

Any other exception is a crash, and an input taking over 20 s is "slow" (a missing resource
limit): either is written to fuzz/crashes/ and the run exits 1.
Turn each crash into a case in tests/specs/hostile/ once fixed.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archcomp.base.errors import SpecError, UsageError  # noqa: E402
from archcomp.frontend.loader import load_program  # noqa: E402
from archcomp.frontend.source import decode  # noqa: E402
from archcomp.passes.pipeline import check_program  # noqa: E402

SPECS = ROOT / "specs"
CRASHES = ROOT / "fuzz" / "crashes"
SLOW = 20.0  # seconds: an input that takes longer is reported (a resource limit is missing)
PUNCTUATION = [
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"-",
    b",",
    b"'",
    b'"',
    b"&a ",
    b"*a",
    b"!!",
    b"!!python/object:x",
    b"\t",
    b"\n",
    b"${",
    b"${1/0}",
    b"0",
    b"017",
    b"1:30",
    b"yes",
    b"~",
    b"<<: ",
    b"---\n",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"9" * 40,
    b"_",
]


def target(data: bytes) -> str:
    """Run the loader on ``data``; 'ok' or 'error'. Anything else raised is a crash."""
    try:
        text = decode(data, "<fuzz>")
        prog = load_program("<fuzz>", text=text, base_dir=SPECS)
        if prog.spec.nodes:
            check_program(prog, {})
    except (SpecError, UsageError):
        return "error"
    return "ok"


def seeds() -> list[bytes]:
    files = [*sorted(SPECS.rglob("*.yaml"))]
    for sub in ("valid", "invalid", "hostile"):
        files += sorted((ROOT / "tests" / "specs" / sub).rglob("*.yaml"))
    # Cases marked '# hostile: check' take seconds by design (a 20,000-node expansion).
    return [d for d in (p.read_bytes() for p in files) if not d.startswith(b"# hostile: check")]


def mutate(data: bytes, pool: list[bytes], rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a byte
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 1:  # insert YAML punctuation
            b[pos:pos] = rng.choice(PUNCTUATION)
        elif op == 2 and b:  # delete a run
            del b[pos : pos + rng.randint(1, 16)]
        elif op == 3:  # splice a piece of another seed
            other = rng.choice(pool)
            i = rng.randrange(len(other) + 1)
            b[pos:pos] = other[i : i + rng.randint(1, 64)]
        else:  # duplicate a line
            lines = bytes(b).split(b"\n")
            k = rng.randrange(len(lines))
            lines.insert(k, lines[k])
            b = bytearray(b"\n".join(lines))
    return bytes(b)


def _crash(data: bytes, kind: str = "crash") -> Path:
    CRASHES.mkdir(parents=True, exist_ok=True)
    path = CRASHES / f"{kind}-{hashlib.sha256(data).hexdigest()[:16]}.yaml"
    path.write_bytes(data)
    return path


def run_random(seconds: float, seed: int, *, quiet: bool = False) -> dict[str, int]:
    """Mutation fuzzing without atheris; counts of ok, error and crash inputs."""
    rng = random.Random(seed)
    pool = seeds()
    counts = {"ok": 0, "error": 0, "crash": 0, "slow": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = mutate(rng.choice(pool), pool, rng)
        start = time.monotonic()
        try:
            counts[target(data)] += 1
            if time.monotonic() - start > SLOW:
                counts["slow"] += 1
                path = _crash(data, "slow")
                if not quiet:
                    print(f"slow ({time.monotonic() - start:.1f} s): {path}", file=sys.stderr)
        except Exception:
            counts["crash"] += 1
            path = _crash(data)
            if not quiet:
                print(f"crash: {path}\n{traceback.format_exc()}", file=sys.stderr)
    return counts


def main() -> int:
    if "--seconds" not in sys.argv:
        try:
            import atheris  # type: ignore[import-not-found]
        except ImportError:
            print(
                "atheris is not installed; use --seconds N for the built-in mutator",
                file=sys.stderr,
            )
            return 2

        def one_input(data: bytes) -> None:
            target(data)

        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    counts = run_random(args.seconds, args.seed)
    total = counts["ok"] + counts["error"] + counts["crash"]
    print(
        f"inputs {total}: ok {counts['ok']}, clean errors {counts['error']}, "
        f"crashes {counts['crash']}, slower than {SLOW:g} s {counts['slow']}"
    )
    return 1 if counts["crash"] or counts["slow"] else 0


if __name__ == "__main__":
    sys.exit(main())
