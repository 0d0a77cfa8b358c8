"""CPU seconds to match a checkpoint against a mapping, at N and 2N (goal: linear, and a
200,000-key header or a 100,000-rule mapping well inside a second or two).

Run: .venv/bin/python benchmarks/bench_mapping_scale.py [--scale 1.0]
Prints, for each size: reading a safetensors header of N one-element tensors, planning
them through one rule; reading a mapping of N rules (the YAML spec reader), planning a
checkpoint of one key per rule; and planning N keys none of which a rule uses (the error
path: "did you mean" is computed only for the diagnostics shown). CPU time
(``time.process_time``), so a busy machine shows about the same figures.

Measured on a shared 2-core machine (Python 3.11, PyYAML 6.0.4 with libyaml), loaded by
other jobs (load average 4 to 6), CPU seconds, two runs::

        keys    rules |  header    plan | mapping    plan | renamed
     200,000  100,000 |    0.52    0.65 |    0.65    0.70 |    0.79
     400,000  200,000 |    1.19    1.38 |    1.32    1.48 |    1.91
     200,000  100,000 |    0.58    0.71 |    0.66    0.75 |    0.91
     400,000  200,000 |    1.35    1.55 |    1.46    1.60 |    1.74

The code before this round, run back to back with it, read 0.56, 0.69, 0.85, 0.83, 0.80 at
200,000 keys (0.58, 0.71, 0.88, 0.86, 0.92 in a second run): the mapping's column is what
changed. The YAML reader keeps the marks of each mapping's or sequence's entries by key (the
document's ``Marks``), not a path tuple and a position tuple per entry, and takes the
parser's events from its ``get_event`` with no generator between; the plain rules' keys are
checked and split by one ``map`` each (``patterns.plain_keys``). Earlier rounds planned the
keys that only one plain copy can match in bulk: their skeletons and digit runs from one
regex pass over all the names (``KeyIndex.columns``), the steps' fields by one ``map`` each;
the missing tensors of the "renamed" column likewise. What is left is a dict lookup or two
per key, the step objects themselves, building the index of 100,000 rules (a few
microseconds a rule: a key's shape and its table entry), the header's ``json.loads`` (about
half of its column) and per-entry checks, and in the mapping's column libyaml's events
(about a quarter) and each rule's two keys and rule object. The garbage collector is paused
in each stage and its objects handed to the oldest generation untraversed
(``archcomp.base.gcpause``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archcomp.base.errors import SpecError
from archcomp.checkpoints.files import read_header
from archcomp.checkpoints.mapping import load_mapping
from archcomp.checkpoints.plan import plan_import

HEAD = "archcomp_mapping: 1\nspec: gpt2\ncheckpoint: {model_type: x, architecture: X}\ntensors:\n"


def cpu(fn: Callable[[], Any]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def header_file(folder: Path, n: int) -> Path:
    entries = {
        f"layers.{i}.w": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
        for i in range(n)
    }
    head = json.dumps(entries).encode()
    path = folder / f"h{n}.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * (4 * n))
    return path


def mapping_file(folder: Path, rules: list[str]) -> Path:
    path = folder / f"m{len(rules)}.yaml"
    path.write_text(HEAD + "".join(f"  {r}\n" for r in rules))
    return path


def plan(mapping: Any, ck: dict[str, tuple[int, ...]], model: dict[str, tuple[int, ...]]) -> None:
    with contextlib.suppress(SpecError):  # the renamed case fails, as it should
        plan_import(mapping, {}, ck, model, {}, "model.safetensors")


def row(folder: Path, n: int) -> list[float]:
    path = header_file(folder, n)
    header: dict[str, Any] = {}
    t_header = cpu(lambda: header.update(read_header(path)[0]))
    ck = {k: tuple(e["shape"]) for k, e in header.items()}
    one = load_mapping(mapping_file(folder, ["layers.{i}.w: m.{i}.w"]))
    model = {f"m.{i}.w": (1,) for i in range(n)}
    t_plan_keys = cpu(lambda: plan(one, ck, model))
    half = n // 2  # as many rules as the 100,000 of the issue at the 200,000-key size
    rules_path = mapping_file(folder, [f"k{r}.{{i}}.w: m{r}.{{i}}.w" for r in range(half)])
    many: list[Any] = []
    t_rules = cpu(lambda: many.append(load_mapping(rules_path)))
    ck_rules = {f"k{r}.0.w": (1,) for r in range(half)}
    model_rules = {f"m{r}.0.w": (1,) for r in range(half)}
    t_plan_rules = cpu(lambda: plan(many[0], ck_rules, model_rules))
    renamed = {f"renamed.{i}.w": (1,) for i in range(n)}
    t_renamed = cpu(lambda: plan(one, renamed, model))
    return [t_header, t_plan_keys, t_rules, t_plan_rules, t_renamed]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="sizes times this (default 1)")
    args = p.parse_args()
    base = int(200_000 * args.scale)
    print(
        f"{'keys':>8} {'rules':>8} | {'header':>7} {'plan':>7} | {'mapping':>7} {'plan':>7} |"
        f" {'renamed':>7}   (CPU seconds)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in (base, 2 * base):
            t = row(Path(tmp), n)
            print(
                f"{n:>8,} {n // 2:>8,} | {t[0]:7.2f} {t[1]:7.2f} | {t[2]:7.2f} {t[3]:7.2f} |"
                f" {t[4]:7.2f}"
            )


if __name__ == "__main__":
    main()
