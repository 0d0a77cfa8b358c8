"""The hostile corpus: spec cases from tests/specs/hostile/, cases generated at run time
(binary, huge, deeply nested), weight files, and the canary runner that executes them all.

Used by tests/test_hostile*.py, tests/test_weights_hostile.py and scripts/hostile_report.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ROOT / "tests" / "specs" / "hostile"
SUPPORT = Path(__file__).resolve().parent
MARKER_LINE = "# ---- expected ----"
DIRECTIVE = "# hostile:"
CASES = sorted(HOSTILE.rglob("*.yaml"))


@dataclass
class Job:
    """One run of archcomp in the canary process, and what it must do."""

    id: str
    kind: str  # "cli" or "load"
    argv: list[str] = field(default_factory=list)
    path: str = ""
    cwd: str = str(ROOT)
    exit: int | None = 1  # required exit status (None: any non-zero)
    expect: str | None = None  # exact stderr
    contains: tuple[str, ...] = ()  # substrings stderr must contain
    lacks: tuple[str, ...] = ()  # substrings stderr must not contain
    outdir: Path | None = None  # must be empty afterwards (no output file left behind)
    keep: dict[Path, bytes] = field(default_factory=dict)  # files that must be unchanged
    max_memory: str | None = None  # archcomp.load's budget
    output: Path | None = None  # a file written that must hold no invisible character

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "argv": self.argv,
            "path": self.path,
            "cwd": self.cwd,
            "max_memory": self.max_memory,
        }


def expected_stderr(text: str) -> str | None:
    if MARKER_LINE not in text:
        return None
    tail = text.partition(MARKER_LINE + "\n")[2]
    return "".join(
        line[2:] if line.startswith("# ") else line[1:] for line in tail.splitlines(keepends=True)
    )


def directive(text: str) -> tuple[list[str] | None, int]:
    """``# hostile: build --max-memory 8GB; exit 2`` -> (["build", "--max-memory", "8GB"], 2).

    Without a directive a case runs through check, build and draw, which must fail alike.
    ``emit`` builds on meta with --emit-python and imports the generated file (exit 0: the
    input is legal and must work, with nothing executed)."""
    first = text.split("\n", 1)[0]
    if not first.startswith(DIRECTIVE):
        return None, 1
    command, _, rest = first[len(DIRECTIVE) :].rpartition(";")
    if not command:
        command, rest = rest, ""
    code = int(rest.strip().removeprefix("exit").strip()) if rest.strip() else 1
    return shlex.split(command), code


def spec_jobs(case: Path, tmp: Path) -> list[Job]:
    """The designated command (golden stderr) and, for check cases, build and draw as well:
    a spec that fails to check must fail the same way everywhere, writing nothing."""
    rel = str(case.relative_to(ROOT))
    name = str(case.relative_to(HOSTILE).with_suffix(""))
    text = case.read_text(encoding="utf-8", errors="replace")
    command, code = directive(text)
    expect = expected_stderr(text)
    out = tmp / "out" / name.replace("/", "__")
    out.mkdir(parents=True, exist_ok=True)
    jobs: list[Job] = []
    if command is None:
        jobs.append(Job(f"{name}:check", "cli", ["check", rel], exit=code, expect=expect))
        jobs.append(
            Job(
                f"{name}:build",
                "cli",
                ["build", rel, "-o", str(out / "m.safetensors")],
                exit=code,
                expect=expect,
                outdir=out,
            )
        )
        jobs.append(
            Job(
                f"{name}:draw",
                "cli",
                ["draw", rel, "-o", str(out / "m.svg")],
                exit=code,
                expect=expect,
                outdir=out,
            )
        )
    else:
        kind, path = "cli", ""
        argv = [command[0], rel, *command[1:]]
        if command[0] == "build":
            argv += ["-o", str(out / "m.safetensors")]
        output = None
        if command[0] == "draw":
            argv += ["-o", str(out / "m.svg")]
            output = out / "m.svg" if code == 0 else None
        if command[0] == "emit":
            kind, path = "emit", str(out / "m.py")
            argv = ["build", rel, *command[1:], "--device", "meta", "--emit-python", path]
        jobs.append(
            Job(
                f"{name}:{command[0]}",
                kind,
                argv,
                path=path,
                exit=code,
                expect=expect,
                outdir=out if code != 0 else None,  # a legal input writes its outputs
                output=output,
            )
        )
    return jobs


def _spec(body: str) -> str:
    return "archcomp: 1\nname: m\ninputs: {x: [B, 4]}\n" + body


GENERATED: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    # name: (bytes of the spec, substrings its error must contain)
    "invalid_utf8": (
        lambda: (
            _spec("nodes:\n  - {id: fc, op: linear, out_features: 2}\n").encode()
            + b"outputs: \xff\xfe\n"
        ),
        (":6:10: error: invalid UTF-8 byte 0xff",),
    ),
    "latin1_text": (
        lambda: "archcomp: 1\nname: caf\u00e9\n".encode("latin-1"),
        (":2:10: error: invalid UTF-8 byte 0xe9",),
    ),
    "nul_byte": (
        lambda: _spec("nodes:\n  - {id: fc, op: linear, out_features: 2}\x00\n").encode(),
        (":5:42: error: NUL byte in spec",),
    ),
    "utf16_with_bom": (
        lambda: _spec("outputs: fc\n").encode("utf-16"),
        (":1:1: error: invalid UTF-8 byte 0xff",),
    ),
    "file_50mb": (
        lambda: (_spec("nodes:\n") + "  # padding\n" * (50 * 1024 * 1024 // 12)).encode(),
        (":1:1: error: spec is ", "bytes; the limit is 8,388,608"),
    ),
    "nesting_10000_flow": (
        lambda: (
            "archcomp: 1\nname: m\nparams: {p: " + "[" * 10_000 + "]" * 10_000 + "}\n"
        ).encode(),
        (":3:75: error: spec nests deeper than 64 levels",),
    ),
    "nesting_10000_block": (
        lambda: ("archcomp: 1\nname: m\nparams:\n  p:\n    " + "- " * 10_000 + "x\n").encode(),
        ("error: spec nests deeper than 64 levels",),
    ),
    "nesting_10000_mapping_flow": (
        lambda: ("archcomp: 1\nname: {" + "a: {" * 10_000 + "}" * 10_001 + "\n").encode(),
        ("error: spec nests deeper than 64 levels",),
    ),
    "alias_bomb_billion_laughs": (
        lambda: (
            "archcomp: 1\nname: m\n"
            + "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
            + "".join(
                f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 12)
            )
        ).encode(),
        (":3:5: error: anchors and aliases are not supported in a spec",),
    ),
    "many_keys_200k": (
        lambda: (
            "archcomp: 1\nname: m\nparams:\n"
            + "".join(f"  p{i}: {i}\n" for i in range(200_000))
            + "inputs: {x: [B, 4]}\nnodes: [{id: fc, op: linear, out_features: 2}]\noutputs: fcc\n"
        ).encode(),
        (":200006:10: error: undefined reference 'fcc'",),
    ),
    "long_line_1mb": (
        lambda: ("archcomp: 1\nname: " + "a" * 1_000_000 + "\n").encode(),
        ("error: 'name':",),
    ),
    "huge_int_literal_100k_digits": (
        lambda: _spec(
            "nodes:\n  - {id: fc, op: linear, out_features: " + "9" * 100_000 + "}\noutputs: fc\n"
        ).encode(),
        (":5:40: error: an integer of 100,000 digits; archcomp reads at most 100",),
    ),
    "control_characters": (
        lambda: _spec(
            "nodes:\n  - {id: fc, op: linear, out_features: 2}\noutputs: fc\x1b[2J\x07\n"
        ).encode(),
        ("error:",),
    ),
}


def generated_jobs(tmp: Path, names: Iterable[str] | None = None) -> list[Job]:
    """Write the generated cases (all, or those named) into tmp and run each through check,
    build and draw."""
    folder = tmp / "generated"
    folder.mkdir(parents=True, exist_ok=True)
    jobs: list[Job] = []
    for name in GENERATED if names is None else names:
        make, contains = GENERATED[name]
        path = folder / f"{name}.yaml"
        path.write_bytes(make())
        out = tmp / "out" / f"generated__{name}"
        out.mkdir(parents=True, exist_ok=True)
        for cmd, extra in (
            ("check", []),
            ("build", ["-o", str(out / "m.safetensors")]),
            ("draw", ["-o", str(out / "m.svg")]),
        ):
            jobs.append(
                Job(
                    f"generated/{name}:{cmd}",
                    "cli",
                    [cmd, str(path), *extra],
                    cwd=str(tmp),
                    exit=1,
                    contains=(str(path), *contains),
                    outdir=out,
                )
            )
    return jobs


# ----------------------------------------------------------------------------- weight files


def _header(raw: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _pack(header: Any, data: bytes, length: int | None = None) -> bytes:
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(hb) if length is None else length) + hb + data


def weight_files(good: bytes) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """Hostile variants of a valid artifact: name -> (bytes, what the refusal must say)."""
    import pickle

    hdr, data = _header(good)
    names = sorted(k for k in hdr if k != "__metadata__")
    meta = hdr["__metadata__"]

    def edit(fn: Callable[[dict[str, Any]], None]) -> bytes:
        h = json.loads(json.dumps(hdr))
        fn(h)
        return _pack(h, data)

    def with_spec(fn: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
        """Replace the embedded spec (and its hash, so that only the spec's content is tested)."""

        def apply(h: dict[str, Any]) -> None:
            spec = fn(json.loads(meta["archcomp.spec"]))
            text = json.dumps(spec, separators=(",", ":"), ensure_ascii=False)
            h["__metadata__"]["archcomp.spec"] = text
            h["__metadata__"]["archcomp.spec_sha256"] = hashlib.sha256(text.encode()).hexdigest()

        return apply

    def with_main(fn: Callable[[str], str]) -> Callable[[dict[str, Any]], None]:
        """Edit the text of the embedded top-level spec file."""

        def edit_text(s: dict[str, Any]) -> dict[str, Any]:
            files = dict(s["files"])
            files[s["main"]] = fn(files[s["main"]])
            return {**s, "files": files}

        return with_spec(edit_text)

    def raw_spec(fn: Callable[[str], str]) -> Callable[[dict[str, Any]], None]:
        """Edit the embedded spec's JSON text itself (what json.dumps cannot write)."""

        def apply(h: dict[str, Any]) -> None:
            text = fn(meta["archcomp.spec"])
            h["__metadata__"]["archcomp.spec"] = text
            h["__metadata__"]["archcomp.spec_sha256"] = hashlib.sha256(text.encode()).hexdigest()

        return apply

    def legacy(fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
        """An archcomp 0.1 artifact: the embedded spec is the spec's mapping itself."""
        import yaml

        return with_spec(lambda s: fn(yaml.safe_load(s["files"][s["main"]])))

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("touch ARCHCOMP_CANARY_unpickled",))

    weight = next(n for n in names if n.endswith("weight"))
    w_off = hdr[weight]["data_offsets"]
    other = next(
        n
        for n in names
        if n != weight
        and hdr[n]["data_offsets"][1] - hdr[n]["data_offsets"][0] <= w_off[1] - w_off[0]
    )

    def overlap(h: dict[str, Any]) -> None:
        # the other tensor's bytes are claimed inside the weight's span (same sizes as before)
        size = h[other]["data_offsets"][1] - h[other]["data_offsets"][0]
        h[other]["data_offsets"] = [w_off[0], w_off[0] + size]

    def dup_names() -> bytes:
        items = [(k, v) for k, v in hdr.items()]
        body = ",".join(
            json.dumps(k) + ":" + json.dumps(v) for k, v in [*items, (weight, hdr[weight])]
        )
        return _pack(("{" + body + "}").encode(), data)

    def flip_weight() -> bytes:
        b = bytearray(good)
        b[-1] ^= 0x01
        return bytes(b)

    return {
        "pickle_protocol2_renamed": (
            pickle.dumps(Payload(), protocol=2),
            ("looks like a torch.save (pickle) file",),
        ),
        "pickle_protocol0_renamed": (
            pickle.dumps(Payload(), protocol=0),
            ("first 8 bytes give a header length",),
        ),
        "torch_save_zip_renamed": (
            b"PK\x03\x04" + b"\x00" * 60 + b"archive/data.pkl",
            ("looks like a torch.save (pickle) file",),
        ),
        "empty_file": (b"", ("only 0 bytes",)),
        "header_length_huge": (
            _pack(hdr, data, length=2**63),
            ("header length of 9223372036854775808",),
        ),
        "header_length_zero": (_pack(hdr, data, length=0), ("header length of 0",)),
        "header_length_past_end": (_pack(hdr, data, length=10**6), ("header length of",)),
        "header_not_json": (_pack(b"{not json at all", data), ("its header is not JSON",)),
        "header_not_object": (_pack(b"[1, 2, 3]", data), ("its header is not a JSON object",)),
        "header_deeply_nested": (
            _pack(b"[" * 100_000 + b"]" * 100_000, data),
            ("its header is not JSON",),
        ),
        "no_embedded_spec": (edit(lambda h: h.pop("__metadata__")), ("not an archcomp artifact",)),
        "overlapping_offsets": (edit(overlap), ("overlap",)),
        "offsets_past_end": (
            edit(lambda h: h[weight].__setitem__("data_offsets", [w_off[0], w_off[0] + 10**15])),
            ("needs",),
        ),
        "negative_offsets": (
            edit(lambda h: h[weight].__setitem__("data_offsets", [-4, w_off[1]])),
            ("malformed entry",),
        ),
        "duplicate_names": (dup_names(), (f"the name '{weight}' appears twice",)),
        "truncated": (good[:-16], ("is truncated",)),
        "truncated_in_header": (good[: 8 + 40], ("header length of",)),
        "trailing_bytes": (good + b"ARCHCOMP_CANARY", ("bytes after the last tensor",)),
        "shape_mismatch": (
            edit(lambda h: h[weight].__setitem__("shape", list(reversed(h[weight]["shape"])))),
            (f"{weight}: shape",),
        ),
        "dtype_mismatch": (
            edit(lambda h: h[weight].__setitem__("dtype", "I32")),
            (f"{weight}: dtype I32 in the file",),
        ),
        "unknown_dtype": (
            edit(lambda h: h[weight].__setitem__("dtype", "F8_E4M3")),
            ("dtype F8_E4M3 in the file",),
        ),
        "name_mismatch": (
            edit(lambda h: h.__setitem__("evil.__class__", h.pop(weight))),
            ("missing tensors", "unexpected tensors: evil.__class__"),
        ),
        "weights_hash_mismatch": (flip_weight(), ("the weights do not match their SHA-256",)),
        "spec_hash_mismatch": (
            edit(
                lambda h: h["__metadata__"].__setitem__(
                    "archcomp.spec", meta["archcomp.spec"].replace("fc2", "fc3")
                )
            ),
            ("the embedded spec does not match its SHA-256",),
        ),
        "embedded_spec_with_import": (  # resolved among the stored texts only: never the disk
            edit(with_main(lambda t: t + "imports: [ARCHCOMP_CANARY_secret.yaml]\n")),
            ("ARCHCOMP_CANARY_secret.yaml' is not among the artifact's sources",),
        ),
        "embedded_spec_import_escape": (
            edit(with_main(lambda t: t + "imports: [../ARCHCOMP_CANARY_secret.yaml]\n")),
            ("leaves the spec's directory tree",),
        ),
        "embedded_main_outside": (
            edit(with_spec(lambda s: {**s, "main": "../ARCHCOMP_CANARY.yaml"})),
            ("not a mapping of spec texts with a main file",),
        ),
        "embedded_files_not_texts": (
            edit(with_spec(lambda s: {**s, "files": {s["main"]: ["ARCHCOMP_CANARY"]}})),
            ("not a mapping of spec texts",),
        ),
        "embedded_spec_not_mapping": (
            edit(with_spec(lambda s: ["ARCHCOMP_CANARY"])),
            ("not a self-contained spec",),
        ),
        "embedded_legacy_with_import": (
            edit(legacy(lambda s: {**s, "imports": ["ARCHCOMP_CANARY_secret.yaml"]})),
            ("not a self-contained spec",),
        ),
        "embedded_legacy_loads_without_redump": (
            edit(legacy(lambda s: {**s, "nodes": [{**s["nodes"][0], "op": "ARCHCOMP_CANARY"}]})),
            ("unknown op 'ARCHCOMP_CANARY'",),
        ),
        "embedded_spec_python_op": (
            edit(
                with_main(lambda t: t.replace("op: linear, out", "op: archcomp_canary.fire, out"))
            ),
            ("unknown op 'archcomp_canary.fire'",),
        ),
        "embedded_spec_target_key": (
            edit(with_main(lambda t: t.replace("{id: fc1,", "{id: fc1, _target_: os.system,"))),
            ("unknown argument '_target_'",),
        ),
        "embedded_override_unknown": (
            edit(with_spec(lambda s: {**s, "params": {"ARCHCOMP_CANARY": 1}})),
            ("unknown param 'ARCHCOMP_CANARY'",),
        ),
        "embedded_spec_huge_layer": (  # refused by the estimate, before anything is allocated
            edit(with_main(lambda t: t.replace("out_features: 5}", "out_features: 1000000000}"))),
            ("the model needs about 48.4 GiB for 13,000,000,002 parameters",),
        ),
        "embedded_spec_number_past_json": (
            edit(raw_spec(lambda t: t.replace('"params":{}', '"params":{"n":' + "9" * 5000 + "}"))),
            ("is not valid JSON",),
        ),
        "header_number_past_json": (
            _pack(
                b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,' + b"9" * 5000 + b"]}}", data
            ),
            ("its header holds a number of over 4,300 digits",),
        ),
        "header_offsets_past_int64": (
            edit(lambda h: h[weight].__setitem__("data_offsets", [0, 10**30])),
            ("malformed entry",),
        ),
        "header_shape_past_int64": (
            edit(lambda h: h[weight].__setitem__("shape", [10**30, 10**30])),
            ("malformed entry",),
        ),
        "embedded_metadata_not_json": (
            edit(lambda h: h["__metadata__"].__setitem__("archcomp.ties", "{ARCHCOMP_CANARY")),
            ("not valid JSON",),
        ),
        "embedded_ties_not_mapping": (
            edit(lambda h: h["__metadata__"].__setitem__("archcomp.ties", "[1, 2]")),
            ("archcomp.ties is not a mapping",),
        ),
        "embedded_dtype_unknown": (
            edit(lambda h: h["__metadata__"].__setitem__("archcomp.dtype", "int8")),
            ("unknown dtype 'int8'",),
        ),
    }


WEIGHT_CASES = (
    "pickle_protocol2_renamed",
    "pickle_protocol0_renamed",
    "torch_save_zip_renamed",
    "empty_file",
    "header_length_huge",
    "header_length_zero",
    "header_length_past_end",
    "header_not_json",
    "header_not_object",
    "header_deeply_nested",
    "no_embedded_spec",
    "overlapping_offsets",
    "offsets_past_end",
    "negative_offsets",
    "duplicate_names",
    "truncated",
    "truncated_in_header",
    "trailing_bytes",
    "shape_mismatch",
    "dtype_mismatch",
    "unknown_dtype",
    "name_mismatch",
    "weights_hash_mismatch",
    "spec_hash_mismatch",
    "embedded_spec_with_import",
    "embedded_spec_import_escape",
    "embedded_main_outside",
    "embedded_files_not_texts",
    "embedded_spec_not_mapping",
    "embedded_legacy_with_import",
    "embedded_legacy_loads_without_redump",
    "embedded_spec_python_op",
    "embedded_spec_target_key",
    "embedded_override_unknown",
    "embedded_spec_huge_layer",
    "embedded_spec_number_past_json",
    "header_number_past_json",
    "header_offsets_past_int64",
    "header_shape_past_int64",
    "embedded_metadata_not_json",
    "embedded_ties_not_mapping",
    "embedded_dtype_unknown",
    "fifo_as_weight_file",
    "table_past_the_load_budget",
    "table_without_a_budget",
)

# An artifact of a few hundred bytes whose spec asks for a 600,000 x 1024 sinusoidal table
# (2.4 GB, its temporaries once more): loaded with a budget, refused before it is computed.
POSENC = """archcomp: 1
name: posenc
inputs: {x: [B, S, 8]}
nodes:
  - {id: pe, op: sinusoidal_positional_encoding, max_len: 16}
outputs: pe
"""


def weight_jobs(tmp: Path, good: bytes) -> list[Job]:
    import archcomp

    folder = tmp / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    fifo = folder / "fifo_as_weight_file.safetensors"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    jobs = [
        Job(
            "weights/fifo_as_weight_file:load",
            "load",
            path=str(fifo),
            cwd=str(folder),
            exit=1,
            contains=("is not a regular file (a FIFO)",),
        )
    ]
    small = folder / "posenc.safetensors"
    archcomp.save(archcomp.build(POSENC), small)
    hdr, data = _header(small.read_bytes())
    meta = hdr["__metadata__"]
    env = json.loads(meta["archcomp.spec"])
    env["files"][env["main"]] = POSENC.replace("max_len: 16", "max_len: 600000").replace(
        "8]}", "1024]}"
    )
    meta["archcomp.spec"] = json.dumps(env, separators=(",", ":"))
    meta["archcomp.spec_sha256"] = hashlib.sha256(meta["archcomp.spec"].encode()).hexdigest()
    table = folder / "table_past_the_load_budget.safetensors"
    table.write_bytes(_pack(hdr, data))
    jobs.append(
        Job(
            "weights/table_past_the_load_budget:load",
            "load",
            path=str(table),
            cwd=str(folder),
            exit=1,
            contains=("at its peak", "over the --max-memory budget of 953.7 MiB"),
            max_memory="1GB",
            keep={table: table.read_bytes()},
        )
    )
    jobs.append(  # without a budget: the table's work is bounded (--max-init-flops' default)
        Job(
            "weights/table_without_a_budget:load",
            "load",
            path=str(table),
            cwd=str(folder),
            exit=1,
            contains=("the tables need about 3.1e+11 floating-point operations",),
            keep={table: table.read_bytes()},
        )
    )
    small.unlink()
    for name, (blob, contains) in weight_files(good).items():
        path = folder / f"{name}.safetensors"
        path.write_bytes(blob)
        jobs.append(
            Job(
                f"weights/{name}:load",
                "load",
                path=str(path),
                cwd=str(folder),
                exit=1,
                contains=contains,
                keep={path: blob},
            )
        )
    return jobs


def good_artifact(tmp: Path) -> bytes:
    """A valid artifact of specs/mlp.yaml (built in this process)."""
    import archcomp

    path = tmp / "good.safetensors"
    archcomp.save(archcomp.build(ROOT / "specs" / "mlp.yaml", seed=0), path, force=True)
    return path.read_bytes()


# ----------------------------------------------------------------------------- running


# What every case must stay within, measured per case by the runner (canary.py, wait4):
# CPU seconds (its own and its children's, such as dot) and peak resident memory. CPU time,
# not wall time, so that a machine busy with other work does not fail a case; a case that
# hangs is killed at the runner's wall-clock limit and fails too. These are resource guards,
# not speed goals (those live in benchmarks/bench_scale.py): the costliest legal case,
# `archcomp build` of the 20,000-node spec, takes about 5 s of CPU in its forked child (5.4 s
# measured with the machine's two cores shared by ten processes), and took 25.8 s of CPU on a
# machine loaded harder still (issue 29: CPU time grows under load too, as caches and cores are
# shared), so 60 s keeps more than 10x over the quiet figure and 2x over that loaded one; a
# runaway case (exponential work) still passes it within a minute.
MAX_SECONDS = 60.0
MAX_MEMORY = 4 << 30


def run_jobs(jobs: list[Job], tmp: Path, timeout: float = 7200) -> list[dict[str, Any]]:
    """Run every job in the canary runner (each in its own forked child); results in job
    order."""
    canary = tmp / "canary"
    canary.mkdir(parents=True, exist_ok=True)
    (tmp / "jobs.json").write_text(json.dumps([j.to_json() for j in jobs]))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SUPPORT / "canary_path"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["ARCHCOMP_CANARY_DIR"] = str(canary)
    proc = subprocess.run(
        [
            sys.executable,
            str(SUPPORT / "canary.py"),
            str(tmp / "jobs.json"),
            str(tmp / "results.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    if proc.returncode != 0 or not (tmp / "results.json").exists():
        raise RuntimeError(f"canary runner died ({proc.returncode}):\n{proc.stderr[-4000:]}")
    results: list[dict[str, Any]] = json.loads((tmp / "results.json").read_text())
    fired = (canary / "FIRED").exists()
    for r in results:
        r["canary_fired"] = fired
    return results


@dataclass
class Verdict:
    clean: bool
    traceback: bool
    executed: bool
    lost: bool
    problems: list[str]
    over: bool = False  # past MAX_SECONDS or MAX_MEMORY (or killed at the wall-clock limit)


def judge(job: Job, result: dict[str, Any]) -> Verdict:
    """Classify one result: a clean error (or, for a legal input, a success), a traceback,
    code executed, files lost/left, or past its time and memory bounds."""
    problems: list[str] = []
    err = result["stderr"]
    traceback = bool(result["traceback"]) or "internal error" in err
    executed = bool(result["events"]) or bool(result.get("canary_fired"))
    if traceback:
        problems.append("traceback or internal error")
    if executed:
        problems.append(f"canary: {result['events']} fired={result.get('canary_fired')}")
    code = result["code"]
    if job.exit == 0:
        if code != 0:
            problems.append(f"exit status {code}, expected success")
    elif code == 0 or code is None:
        problems.append(f"exit status {code}, expected an error")
    elif job.exit is not None and code != job.exit:
        problems.append(f"exit status {code}, expected {job.exit}")
    if job.expect is not None and err != job.expect:
        problems.append("stderr differs from the expected output")
    for s in job.contains:
        if s not in err:
            problems.append(f"stderr lacks {s!r}")
    for s in job.lacks:
        if s in err:
            problems.append(f"stderr holds {s!r}")
    if job.exit != 0 and "error" not in err:
        problems.append("no error message")
    over = False
    if "cpu" in result:
        if result.get("timed_out"):
            over = True
            problems.append(f"killed after {result['wall']:.0f} s")
        if result["cpu"] > MAX_SECONDS:
            over = True
            problems.append(f"took {result['cpu']:.1f} s of CPU (bound {MAX_SECONDS:g} s)")
        if result["max_rss"] > MAX_MEMORY:
            over = True
            problems.append(f"peaked at {result['max_rss'] / 2**30:.2f} GiB (bound 4 GiB)")
    if job.output is not None:
        from archcomp.base.text import INVISIBLE

        text = job.output.read_text() if job.output.exists() else ""
        found = [m.group(0) for m in INVISIBLE.finditer(text) if m.group(0) not in "\n\r\t"]
        if not job.output.exists():
            problems.append(f"{job.output.name} was not written")
        elif found:
            problems.append(f"{job.output.name} holds {found[0]!r} raw")
    lost = False
    if job.outdir is not None and job.outdir.exists() and any(job.outdir.iterdir()):
        lost = True
        problems.append(f"files left behind: {sorted(p.name for p in job.outdir.iterdir())}")
    for path, blob in job.keep.items():
        if not path.exists() or path.read_bytes() != blob:
            lost = True
            problems.append(f"{path} changed or vanished")
    clean = not problems
    return Verdict(clean, traceback, executed, lost, problems, over)
