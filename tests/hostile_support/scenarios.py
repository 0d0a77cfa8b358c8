"""Hostile cases that a single spec file cannot carry: several files (diamond imports,
symlink loops), odd file names, inputs too large to check in (the largest legal spec, a dense
DAG, thousands of errors), and command lines (all-or-nothing outputs, limits of dot, artifacts
that must reload exactly). Each scenario writes its files into a folder and returns its jobs;
every job runs in the canary runner under the same per-case bounds as the spec corpus.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from hostile_support.corpus import Job

Scenario = Callable[[Path], list[Job]]
SCENARIOS: dict[str, Scenario] = {}

HEAD = "archcomp: 1\nname: m\ninputs: {x: [B, 4]}\n"
BLOCK = "blocks:\n  b{i}:\n    inputs: [x]\n    nodes: [{{id: r, op: relu}}]\n    outputs: r\n"


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


def _three(
    name: str, spec: Path, out: Path, exit: int, contains: tuple[str, ...], cwd: Path
) -> list[Job]:
    """check, build and draw of a spec that must fail alike, leaving ``out`` empty."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        Job(
            f"{name}:{cmd}",
            "cli",
            [cmd, str(spec), *extra],
            cwd=str(cwd),
            exit=exit,
            contains=contains,
            outdir=out,
        )
        for cmd, extra in (
            ("check", []),
            ("build", ["-o", str(out / "m.safetensors")]),
            ("draw", ["-o", str(out / "m.svg")]),
        )
    ]


# -- the loader --------------------------------------------------------------------------


@scenario
def diamond_imports(folder: Path) -> list[Job]:
    """15 files, each importing the next four times: 4^14 paths, each file read once."""
    n = 15
    for i in range(n):
        imports = "" if i == n - 1 else "imports: [" + ", ".join([f"f{i + 1}.yaml"] * 4) + "]\n"
        (folder / f"f{i}.yaml").write_text("archcomp: 1\n" + imports + BLOCK.format(i=i))
    main = folder / "main.yaml"
    main.write_text(
        HEAD.replace("name: m", "name: diamond") + "imports: [f0.yaml]\n"
        f"nodes:\n  - {{id: a, op: b{n - 1}}}\noutputs: a\n"
    )
    out = folder / "out"
    out.mkdir()
    return [
        Job("diamond_imports:check", "cli", ["check", str(main)], cwd=str(folder), exit=0),
        Job(
            "diamond_imports:build",
            "cli",
            ["build", str(main), "-o", str(out / "m.safetensors")],
            cwd=str(folder),
            exit=0,
        ),
        Job("diamond_imports:load", "load", path=str(out / "m.safetensors"), exit=0),
    ]


@scenario
def diamond_imports_too_deep(folder: Path) -> list[Job]:
    """The same diamond 17 files deep: the depth limit, reported once per import."""
    n = 18
    for i in range(n):
        imports = "" if i == n - 1 else "imports: [" + ", ".join([f"f{i + 1}.yaml"] * 4) + "]\n"
        (folder / f"f{i}.yaml").write_text("archcomp: 1\n" + imports + BLOCK.format(i=i))
    main = folder / "main.yaml"
    main.write_text(HEAD + "imports: [f0.yaml]\nnodes:\n  - {id: a, op: b0}\noutputs: a\n")
    return _three(
        "diamond_imports_too_deep",
        main,
        folder / "out",
        1,
        ("imports nest deeper than 16",),
        folder,
    )


@scenario
def import_paths(folder: Path) -> list[Job]:
    """A symlink loop, a NUL, a 300-character name, a FIFO: each a located error."""
    os.symlink("loop2.yaml", folder / "loop1.yaml")
    os.symlink("loop1.yaml", folder / "loop2.yaml")
    os.mkfifo(folder / "fifo.yaml")
    main = folder / "main.yaml"
    long = "x" * 300 + ".yaml"
    main.write_text(
        HEAD + f'imports: [loop1.yaml, "a\\0b.yaml", {long}, fifo.yaml]\n'
        "nodes: [{id: r, op: relu}]\noutputs: r\n"
    )
    return _three(
        "import_paths",
        main,
        folder / "out",
        1,
        (
            "main.yaml:4:11: error: cannot read import 'loop1.yaml': Too many levels of symbolic",
            "main.yaml:4:23: error: the import path holds a control character",
            "File name too long",
            "import 'fifo.yaml' is not a regular file",
        ),
        folder,
    )


@scenario
def many_files(folder: Path) -> list[Job]:
    names = [f"l{i}.yaml" for i in range(300)]
    for name in names:
        (folder / name).write_text("archcomp: 1\n")
    main = folder / "main.yaml"
    main.write_text(HEAD + "imports: [" + ", ".join(names) + "]\n")
    return _three("many_files", main, folder / "out", 1, ("reads more than 256 files",), folder)


@scenario
def newline_in_file_name(folder: Path) -> list[Job]:
    """A file name cannot forge a second 'file:1:1: error:' line."""
    spec = folder / "a\nforged.yaml:1:1: error: pwned"
    spec.write_text(HEAD + "nodes: [{id: r, op: bogus}]\noutputs: r\n")
    jobs = _three(
        "newline_in_file_name",
        spec,
        folder / "out",
        1,
        ("a\\nforged.yaml:1:1: error: pwned:4:", "error: node 'r': unknown op 'bogus'"),
        folder,
    )
    for job in jobs:
        job.lacks = ("\nforged",)
    return jobs


# -- values, sizes, errors ----------------------------------------------------------------


@scenario
def hex_5000_digits(folder: Path) -> list[Job]:
    spec = folder / "hex.yaml"
    spec.write_text(
        HEAD + "nodes:\n  - {id: fc, op: linear, out_features: 0x" + "f" * 5000 + "}\noutputs: fc\n"
    )
    jobs = _three(
        "hex_5000_digits",
        spec,
        folder / "out",
        1,
        ("hex.yaml:5:40: error: an integer of about 6,021 digits; archcomp reads at most 100",),
        folder,
    )
    p = folder / "p.yaml"
    p.write_text(
        HEAD.replace("inputs", "params: {F: 1.5}\ninputs")
        + "nodes: [{id: r, op: relu}]\noutputs: r\n"
    )
    jobs.append(
        Job(
            "hex_5000_digits:override",
            "cli",
            ["check", str(p), "-p", "F=0x" + "f" * 5000],
            exit=2,
            contains=("-p F: an integer of about 6,021 digits",),
        )
    )
    return jobs


@scenario
def undefined_references_8000(folder: Path) -> list[Job]:
    spec = folder / "undef.yaml"
    nodes = "".join(f"  - {{id: n{i}, op: relu, in: q{i}}}\n" for i in range(8000))
    spec.write_text(HEAD + "nodes:\n" + nodes + "outputs: n7999\n")
    return _three(
        "undefined_references_8000",
        spec,
        folder / "out",
        1,
        ("undefined reference 'q0'", "8,000 errors (7,980 not shown)"),
        folder,
    )


@scenario
def duplicate_ids_20000(folder: Path) -> list[Job]:
    spec = folder / "dup.yaml"
    spec.write_text(HEAD + "nodes:\n" + "  - {id: a, op: relu}\n" * 20_000 + "outputs: a\n")
    return _three(
        "duplicate_ids_20000",
        spec,
        folder / "out",
        1,
        ("id 'a' is already used by a node", "19,999 errors (19,979 not shown)"),
        folder,
    )


@scenario
def one_line_unknown_ops(folder: Path) -> list[Job]:
    """A 229 KB spec on one line, an unknown op per node: a bounded report."""
    nodes = ", ".join(f"{{id: n{i}, op: bogus{i}}}" for i in range(8000))
    spec = folder / "one.yaml"
    spec.write_text(
        f"{{archcomp: 1, name: m, inputs: {{x: [B, 4]}}, outputs: n0, nodes: [{nodes}]}}\n"
    )
    return _three(
        "one_line_unknown_ops",
        spec,
        folder / "out",
        1,
        ("unknown op 'bogus0'", "8,000 errors (7,980 not shown)"),
        folder,
    )


# -- what is legal must work, within the bounds ------------------------------------------


@scenario
def largest_legal_spec(folder: Path) -> list[Job]:
    """20,000 nodes, the limit: checked, built, its artifact loaded; too many boxes to draw."""
    from archcomp.frontend.expand import MAX_NODES

    spec = folder / "largest.yaml"
    nodes = "".join(f"  - {{id: n{i}, op: relu}}\n" for i in range(MAX_NODES))
    spec.write_text(HEAD + "nodes:\n" + nodes + f"outputs: n{MAX_NODES - 1}\n")
    out = folder / "out"
    out.mkdir()
    artifact = str(out / "m.safetensors")
    return [
        Job("largest_legal_spec:check", "cli", ["check", str(spec)], exit=0),
        Job("largest_legal_spec:build", "cli", ["build", str(spec), "-o", artifact], exit=0),
        Job("largest_legal_spec:load", "load", path=artifact, exit=0),
        Job(
            "largest_legal_spec:draw",
            "cli",
            ["draw", str(spec), "-o", str(out / "m.svg")],
            exit=2,
            contains=("would have 20,002 boxes (limit 2,500)",),
        ),
        Job(
            "largest_legal_spec:one_more",
            "cli",
            ["check", str(_one_more(spec, folder))],
            exit=1,
            contains=("the spec expands to more than 20,000 nodes",),
        ),
    ]


def _one_more(spec: Path, folder: Path) -> Path:
    more = folder / "one_more.yaml"
    text = spec.read_text()
    more.write_text(text.replace("outputs: n19999\n", "  - {id: z, op: relu}\noutputs: z\n"))
    return more


@scenario
def artifact_reloads_exactly(folder: Path) -> list[Job]:
    """A str param overridden with '${1+1}', and a 300 KB spec: both reload as built."""
    typed = folder / "typed.yaml"
    typed.write_text(
        "archcomp: 1\nname: typed\nparams:\n  S: {type: str, default: abc}\n  n: 2\n"
        'inputs: {x: [B, 4]}\nnodes:\n  - {id: fc, op: linear, out_features: "${n}", '
        'label: "${S}"}\noutputs: fc\n'
    )
    big = folder / "big.yaml"
    params = "".join(f"  p{i}: [{', '.join(['1'] * 40)}]\n" for i in range(2500))
    big.write_text(typed.read_text().replace("params:\n", "params:\n" + params))
    out = folder / "out"
    out.mkdir()
    jobs = []
    for name, spec, extra in (
        ("typed", typed, ["-p", "S=${1+1}"]),
        ("big", big, []),
    ):
        artifact = str(out / f"{name}.safetensors")
        jobs.append(
            Job(
                f"artifact_reloads_exactly:{name}:build",
                "cli",
                ["build", str(spec), "-o", artifact, *extra],
                exit=0,
            )
        )
        jobs.append(Job(f"artifact_reloads_exactly:{name}:load", "load", path=artifact, exit=0))
    return jobs


@scenario
def dense_dag(folder: Path) -> list[Job]:
    """1,000 adds of about 20 earlier results each: legal to check and build; refused by the
    edges it would give Graphviz (dot needed 5.8 GB), not by its boxes."""
    lines = ["archcomp: 1", "name: dense", "inputs: {x: [B, 4]}", "nodes:"]
    lines += ["  - {id: n0, op: relu}", "  - {id: n1, op: relu}"]
    for i in range(2, 1000):
        srcs = sorted({0, i - 1, *((i * (7 * j + 3)) % i for j in range(20))})
        lines.append(f"  - {{id: n{i}, op: add, in: [{', '.join(f'n{s}' for s in srcs)}]}}")
    lines.append(f"  - {{id: out, op: add, in: [{', '.join(f'n{i}' for i in range(1000))}]}}")
    spec = folder / "dense.yaml"
    spec.write_text("\n".join([*lines, "outputs: out", ""]))
    out = folder / "out"
    out.mkdir()
    return [
        Job("dense_dag:check", "cli", ["check", str(spec)], exit=0),
        Job(
            "dense_dag:draw",
            "cli",
            ["draw", str(spec), "-o", str(out / "m.svg")],
            exit=2,
            contains=("ranks in all (limit 10,000)", "raise --max-edges"),
            outdir=out,
        ),
    ]


@scenario
def dot_past_its_time_limit(folder: Path) -> list[Job]:
    """A ladder under both count limits that dot takes many seconds to lay out (about 15 on a
    2-core machine): stopped past a 2 s limit, exit 4, only the DOT source written (to lay out
    by hand, as the message says)."""
    lines = ["archcomp: 1", "name: ladder", "inputs: {x: [B, 4]}", "nodes:"]
    lines += ["  - {id: n0, op: relu}", "  - {id: n1, op: relu}", "  - {id: n2, op: relu}"]
    for i in range(3, 2400):  # 2,400 boxes, 9,600 edge segments: under both limits
        lines.append(f"  - {{id: n{i}, op: add, in: [n{i - 1}, n{i - 3}]}}")
    spec = folder / "ladder.yaml"
    spec.write_text("\n".join([*lines, "outputs: n2399", ""]))
    out = folder / "out"
    out.mkdir()
    return [
        Job(
            "dot_past_its_time_limit:draw",
            "cli",
            ["draw", str(spec), "-o", str(out / "new" / "sub" / "m.svg"), "--timeout", "2"],
            exit=4,
            contains=("dot ran past its time limit of 2 s", "wrote", "m.dot"),
            output=out / "new" / "sub" / "m.dot",
        )
    ]


@scenario
def dot_limits_on_the_command_line(folder: Path) -> list[Job]:
    spec = Path(__file__).resolve().parents[2] / "specs" / "mlp.yaml"
    out = folder / "out"
    out.mkdir()
    return [
        Job(
            f"dot_limits_on_the_command_line:{value}",
            "cli",
            ["draw", str(spec), "-o", str(out / "m.svg"), "--timeout", value],
            exit=2,
            contains=("the time limit must be a number of seconds",),
            outdir=out,
        )
        for value in ("nan", "inf", "1e308", "-1")
    ]


# -- all outputs or none -----------------------------------------------------------------


@scenario
def outputs_all_or_none(folder: Path) -> list[Job]:
    """The artifact's folder is a file: the build fails, and --emit-python's existing file is
    not overwritten even with --force."""
    spec = Path(__file__).resolve().parents[2] / "specs" / "mlp.yaml"
    (folder / "blocked").write_text("a file where a folder is needed")
    emit = folder / "e.py"
    emit.write_text("# previous file\n")
    return [
        Job(
            "outputs_all_or_none:build",
            "cli",
            [
                "build",
                str(spec),
                "-o",
                str(folder / "blocked" / "x.safetensors"),
                "--force",
                "--emit-python",
                str(emit),
            ],
            cwd=str(folder),
            exit=2,
            contains=("existing output files are unchanged",),
            keep={emit: emit.read_bytes(), folder / "blocked": (folder / "blocked").read_bytes()},
        )
    ]


def scenario_jobs(tmp: Path, names: Iterable[str] | None = None) -> list[Job]:
    """Every scenario's jobs (or those named), each scenario in its own folder under ``tmp``."""
    jobs: list[Job] = []
    for name in SCENARIOS if names is None else names:
        make = SCENARIOS[name]
        folder = tmp / "scenarios" / name
        folder.mkdir(parents=True, exist_ok=True)
        jobs.extend(make(folder))
    return jobs
