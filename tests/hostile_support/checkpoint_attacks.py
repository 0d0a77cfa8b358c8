"""Hostile checkpoint folders and mappings of several files or a command line, one per class
of issue 21 (paths out of the folder, quadratic matching, internal errors, unbounded output,
half-written outputs, echoed text, inconsistent commands). Each is made at test time (sparse
files, FIFOs, symlinks) and run through the real CLI in the canary runner, which holds it to
60 s of CPU and 4 GiB (:mod:`hostile_support.corpus`).

Used by tests/test_checkpoints_hostile.py (through :func:`attack_jobs`).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostile_support.corpus import Job

SECRET = "ARCHCOMP_CANARY_secret"  # the canary fails a case that opens a path holding it
SMALL_ARGS = ["-p", "N=2", "-p", "d_model=32", "-p", "h=4", "-p", "vocab=61", "-p", "context=16"]


def read_weights(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_weights(path: Path, tensors: dict[str, tuple[list[int], bytes | int]]) -> None:
    """A safetensors file of F32 tensors: name -> (shape, data, or a size for a hole: the file
    is extended sparsely, so gigabytes take no disk)."""
    header: dict[str, Any] = {}
    offset = 0
    for name, (shape, data) in tensors.items():
        size = data if isinstance(data, int) else len(data)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for _, data in tensors.values():
            if isinstance(data, int):
                f.seek(data, os.SEEK_CUR)
            else:
                f.write(data)
        f.truncate()


def _tensors(path: Path) -> dict[str, tuple[list[int], bytes | int]]:
    header, data = read_weights(path)
    header.pop("__metadata__", None)
    return {k: (e["shape"], data[slice(*e["data_offsets"])]) for k, e in header.items()}


def _renamed(folder: Path, rename: Callable[[str], str]) -> None:
    path = folder / "model.safetensors"
    write_weights(path, {rename(k): v for k, v in _tensors(path).items()})


Case = Callable[[Path, Path, Path], Job]  # (case folder, good checkpoint, base) -> its job


def _convert(name: str, folder: Path, base: Path, extra: list[str] | None = None, **kw: Any) -> Job:
    out = base / f"{name}.out"
    out.mkdir()
    argv = ["convert", str(folder), "-o", str(out / "model.safetensors"), *(extra or [])]
    kw.setdefault("outdir", out)
    return Job(f"checkpoints/{name}:convert", "cli", argv=argv, cwd=str(base), **kw)


def _mapping_folder(base: Path, name: str, spec: str) -> Path:
    folder = base / f"{name}.mappings"
    folder.mkdir()
    text = (Path(__file__).parents[2] / "archcomp/specs/hf/gpt2.yaml").read_text()
    (folder / "m.yaml").write_text(text.replace("\nspec: gpt2\n", f"\nspec: {spec}\n"))
    return folder / "m.yaml"


def spec_climbs_out(folder: Path, good: Path, base: Path) -> Job:
    mapping = _mapping_folder(base, folder.name, "../../../../../../../../../etc/passwd")
    return _convert(
        folder.name,
        folder,
        base,
        ["--mapping", str(mapping)],
        exit=1,
        contains=("spec '../../../../../../../../../etc/passwd' leads out of",),
        lacks=("root:",),
    )


def spec_symlink_out(folder: Path, good: Path, base: Path) -> Job:
    secret = base / f"{SECRET}_spec.yaml"
    secret.write_text("archcomp: 1\nname: secret_line_one\n")
    mapping = _mapping_folder(base, folder.name, "spec.yaml")
    (mapping.parent / "spec.yaml").symlink_to(secret)
    return _convert(
        folder.name,
        folder,
        base,
        ["--mapping", str(mapping)],
        exit=1,
        contains=("spec 'spec.yaml' leads out of",),
        lacks=("secret_line_one",),
    )


def _member_symlink_out(member: str) -> Case:
    def case(folder: Path, good: Path, base: Path) -> Job:
        secret = base / f"{SECRET}_{folder.name}"
        shutil.move(folder / member, secret)
        (folder / member).symlink_to(secret)
        contains = (f"'{member}' leads out of",)
        return _convert(folder.name, folder, base, exit=2, contains=contains)

    return case


def shard_symlink_out(folder: Path, good: Path, base: Path) -> Job:
    header, _ = read_weights(folder / "model.safetensors")
    shard = "model-00001-of-00001.safetensors"
    secret = base / f"{SECRET}_{shard}"
    shutil.move(folder / "model.safetensors", secret)
    (folder / shard).symlink_to(secret)
    names = [k for k in header if k != "__metadata__"]
    index = {"metadata": {}, "weight_map": dict.fromkeys(names, shard)}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return _convert(folder.name, folder, base, exit=2, contains=(f"'{shard}' leads out of",))


def config_fifo(folder: Path, good: Path, base: Path) -> Job:
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    return _convert(folder.name, folder, base, exit=2, contains=("config.json",))


def header_200k_tensors(folder: Path, good: Path, base: Path) -> Job:
    tensors = _tensors(folder / "model.safetensors")
    tensors.update({f"extra.{n}.w": ([1], b"\0\0\0\0") for n in range(200_000)})
    write_weights(folder / "model.safetensors", tensors)
    contains = ("tensor 'extra.0.w' is used by no rule", "(and 199999 more like it)")
    return _convert(folder.name, folder, base, exit=1, contains=contains)


def mapping_100k_rules(folder: Path, good: Path, base: Path) -> Job:
    mapping = _mapping_folder(base, folder.name, "gpt2")
    rules = "".join(f"  unused.r{n}.{{i}}.w: h_.{{i}}.unused{n}\n" for n in range(100_000))
    mapping.write_text(mapping.read_text() + rules)
    return _convert(folder.name, folder, base, ["--mapping", str(mapping)], exit=0, outdir=None)


def layers_200_renamed(folder: Path, good: Path, base: Path) -> Job:
    import archcomp

    shutil.rmtree(folder)
    params = {"N": 200, "d_model": 8, "h": 2, "vocab": 11, "context": 4}
    archcomp.save_pretrained(archcomp.build("gpt2", params, seed=0), folder, force=True)
    _renamed(folder, lambda k: k.replace("transformer.", "decoder.", 1))
    contains = ("is used by no rule", "(and 199 more like it)")
    return _convert(folder.name, folder, base, exit=1, contains=contains)


def layer_index_5000_digits(folder: Path, good: Path, base: Path) -> Job:
    _renamed(folder, lambda k: k.replace("transformer.h.1.", f"transformer.h.{'7' * 5000}.", 1))
    contains = ("a number of 5,000 digits; a placeholder's index has at most 18",)
    return _convert(folder.name, folder, base, exit=1, contains=contains)


def sparse_8_gib(folder: Path, good: Path, base: Path) -> Job:
    """vocab 2**26 x 32 floats: 8 GiB apparent, a few KB on disk."""
    vocab = 2**26
    tensors = _tensors(folder / "model.safetensors")
    tensors["transformer.wte.weight"] = ([vocab, 32], vocab * 32 * 4)
    write_weights(folder / "model.safetensors", tensors)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = vocab
    (folder / "config.json").write_text(json.dumps(config))
    contains = ("the model needs about 8.0 GiB", "over the --max-memory budget of 1.9 GiB")
    return _convert(folder.name, folder, base, ["--max-memory", "2GB"], exit=2, contains=contains)


def model_type_forges_lines(folder: Path, good: Path, base: Path) -> Job:
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "x\nforged.yaml:1:1: error: forged \u202e\x1b[2J"
    (folder / "config.json").write_text(json.dumps(config))
    lacks = ("\x1b", "\u202e", "\nforged.yaml:1:1:")
    return _convert(folder.name, folder, base, exit=2, contains=("\\nforged.yaml",), lacks=lacks)


def export_force_config_is_folder(folder: Path, good: Path, base: Path) -> Job:
    out = base / f"{folder.name}.export"
    out.mkdir()
    (out / "config.json").mkdir()
    (out / "model.safetensors").write_bytes(b"the previous weights")
    argv = ["export", "gpt2", *SMALL_ARGS, "--to", "hf", "-o", str(out), "--force"]
    keep = {out / "model.safetensors": b"the previous weights"}
    return Job(
        f"checkpoints/{folder.name}:export", "cli", argv=argv, cwd=str(base), exit=2, keep=keep
    )


def export_to_stdout(folder: Path, good: Path, base: Path) -> Job:
    argv = ["export", "gpt2", *SMALL_ARGS, "--to", "hf", "-o", "-"]
    contains = ("'-' (stdout) is not supported",)
    return Job(
        f"checkpoints/{folder.name}:export",
        "cli",
        argv=argv,
        cwd=str(base),
        exit=2,
        contains=contains,
    )


# name -> how the case is made from a copy of the good checkpoint (its class in issue 21)
ATTACKS: dict[str, Case] = {
    "spec_climbs_out": spec_climbs_out,  # 1: reads outside the folder
    "spec_symlink_out": spec_symlink_out,
    "config_symlink_out": _member_symlink_out("config.json"),
    "weights_symlink_out": _member_symlink_out("model.safetensors"),
    "shard_symlink_out": shard_symlink_out,
    "config_fifo": config_fifo,
    "header_200k_tensors": header_200k_tensors,  # 2: cost in keys x rules
    "mapping_100k_rules": mapping_100k_rules,
    "layers_200_renamed": layers_200_renamed,
    "layer_index_5000_digits": layer_index_5000_digits,  # 3: internal errors
    "sparse_8_gib": sparse_8_gib,  # 4: unbounded output
    "export_force_config_is_folder": export_force_config_is_folder,  # 5: all or none
    "model_type_forges_lines": model_type_forges_lines,  # 6: echoed text
    "export_to_stdout": export_to_stdout,  # 7: consistency
}


def attack_jobs(base: Path, good: Path) -> list[Job]:
    """One job per attack, each on its own copy of the good checkpoint."""
    jobs = []
    for name, make in ATTACKS.items():
        folder = base / name
        shutil.copytree(good, folder)
        jobs.append(make(folder, good, base))
    return jobs
