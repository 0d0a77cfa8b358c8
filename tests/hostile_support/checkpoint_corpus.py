"""Hostile checkpoint folders: each is a valid small GPT-2 checkpoint with one thing made
hostile (pickled weights, header bombs, offsets out of range, a billion-element tensor over a
few bytes, config.json with huge, negative or non-finite sizes, shard indexes that point
outside the folder, mappings that try YAML tags or absolute paths). Each is converted with
``archcomp convert`` in the canary process and must end in its specific clean error: no
traceback, nothing unpickled or executed, no output written, the checkpoint untouched.

Used by tests/test_checkpoints_hostile.py and scripts/hostile_report.py.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostile_support.corpus import Job

SMALL = {"N": 2, "d_model": 32, "h": 4, "vocab": 61, "context": 16}


def good_checkpoint(folder: Path) -> Path:
    """A valid small GPT-2 checkpoint folder, exported from the spec (built in this process)."""
    import archcomp

    archcomp.save_pretrained(archcomp.build("gpt2", SMALL, seed=0), folder, force=True)
    return folder


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch ARCHCOMP_CANARY_unpickled",))


def _header(raw: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _pack(header: Any, data: bytes, length: int | None = None) -> bytes:
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(hb) if length is None else length) + hb + data


Edit = Callable[[Path], None]


def _weights(fn: Callable[[dict[str, Any], bytes], bytes]) -> Edit:
    def apply(folder: Path) -> None:
        path = folder / "model.safetensors"
        hdr, data = _header(path.read_bytes())
        path.write_bytes(fn(hdr, data))

    return apply


def _entry(fn: Callable[[dict[str, Any]], None]) -> Edit:
    def edit(hdr: dict[str, Any], data: bytes) -> bytes:
        fn(hdr["transformer.wte.weight"])
        return _pack(hdr, data)

    return _weights(edit)


def _config(fn: Callable[[dict[str, Any]], Any]) -> Edit:
    def apply(folder: Path) -> None:
        path = folder / "config.json"
        config = json.loads(path.read_text())
        out = fn(config)
        path.write_text(out if isinstance(out, str) else json.dumps(config, indent=2))

    return apply


def _config_text(text: str) -> Edit:
    def apply(folder: Path) -> None:
        (folder / "config.json").write_text(text)

    return apply


def _pickled(name: str) -> Edit:
    def apply(folder: Path) -> None:
        (folder / "model.safetensors").unlink()
        (folder / name).write_bytes(pickle.dumps(_Payload(), protocol=2))

    return apply


def _renamed(blob: bytes) -> Edit:
    def apply(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(blob)

    return apply


def _index(weight_map: Callable[[list[str]], dict[str, str]]) -> Edit:
    def apply(folder: Path) -> None:
        hdr, _ = _header((folder / "model.safetensors").read_bytes())
        names = sorted(k for k in hdr if k != "__metadata__")
        (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
        index = {"metadata": {}, "weight_map": weight_map(names)}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))

    return apply


def _mapping(text: str) -> Edit:
    def apply(folder: Path) -> None:
        (folder.parent / f"{folder.name}.mapping.yaml").write_text(text)

    return apply


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(config: dict[str, Any]) -> None:
        config[key] = value

    return apply


_CANARY_MAPPING = """archcomp_mapping: 1
spec: !!python/object/apply:os.system ["touch ARCHCOMP_CANARY_mapping"]
checkpoint: {model_type: gpt2, architecture: GPT2LMHeadModel}
tensors: {a: b}
"""
_ABSOLUTE_MAPPING = """archcomp_mapping: 1
spec: /etc/ARCHCOMP_CANARY_spec.yaml
checkpoint: {model_type: gpt2, architecture: GPT2LMHeadModel}
tensors: {a: b}
"""

# name -> (how the good folder is made hostile, exit status, what the error must say)
CHECKPOINT_CASES: dict[str, tuple[Edit, int, tuple[str, ...]]] = {
    "pickle_bin_only": (_pickled("pytorch_model.bin"), 2, ("archcomp never unpickles",)),
    "pickle_pt_only": (_pickled("model.pt"), 2, ("archcomp never unpickles",)),
    "pickle_renamed_safetensors": (
        _renamed(pickle.dumps(_Payload(), protocol=2)),
        2,
        ("is a pickle (torch.save) file",),
    ),
    "torch_zip_renamed_safetensors": (
        _renamed(b"PK\x03\x04" + b"\x00" * 60 + b"archive/data.pkl"),
        2,
        ("is a pickle (torch.save) file",),
    ),
    "header_bomb": (
        _weights(lambda h, d: _pack(h, d, length=2**62)),
        2,
        ("header length of 4,611,686,018,427,387,904",),
    ),
    "header_length_past_end": (
        _weights(lambda h, d: _pack(h, d, length=10**6)),
        2,
        ("header length of 1,000,000",),
    ),
    "header_not_json": (_weights(lambda h, d: _pack(b"{nope", d)), 2, ("invalid JSON",)),
    "header_deeply_nested": (
        _weights(lambda h, d: _pack(b"[" * 100_000 + b"]" * 100_000, d)),
        2,
        ("JSON nested too deeply",),
    ),
    "offsets_out_of_range": (
        _entry(lambda e: e.__setitem__("data_offsets", [e["data_offsets"][0], 10**15])),
        2,
        ("needs",),
    ),
    "billion_elements_over_few_bytes": (
        _entry(lambda e: e.update(shape=[10**9], data_offsets=[0, 8])),
        2,
        ("of shape [1000000000] (F32) needs 4000000000 bytes but its offsets give 8",),
    ),
    "unknown_dtype": (_entry(lambda e: e.__setitem__("dtype", "F8_E4M3")), 2, ("dtype 'F8_E4M3'",)),
    "dtype_not_text": (_entry(lambda e: e.__setitem__("dtype", ["F32"])), 2, ("dtype ['F32']",)),
    "header_int_of_500_digits": (  # read by int() only after a scan for such runs
        _weights(
            lambda h, d: _pack(
                json.dumps(h).replace('"shape": [', '"shape": [' + "9" * 500 + ", ", 1).encode(),
                d,
            )
        ),
        2,
        ("model.safetensors:1:", "a number of 500 characters; archcomp reads at most 100"),
    ),
    "header_duplicate_tensor": (
        _weights(
            lambda h, d: _pack((json.dumps(h)[:-1] + ', "transformer.wte.weight": {}}').encode(), d)
        ),
        2,
        ("the key 'transformer.wte.weight' appears twice",),
    ),
    "truncated": (_weights(lambda h, d: _pack(h, d[:-7])), 2, ("is truncated",)),
    "config_int_of_500_digits": (
        _config(lambda c: json.dumps(c).replace('"n_layer": 2', '"n_layer": ' + "9" * 500)),
        2,
        ("a number of 500 characters",),
    ),
    "config_nan": (
        _config(lambda c: json.dumps(c).replace('"n_embd": 32', '"n_embd": NaN')),
        2,
        ("NaN is not a JSON number",),
    ),
    "config_float_overflow": (
        _config(lambda c: json.dumps(c).replace('"n_embd": 32', '"n_embd": 1e999')),
        2,
        ("the number 1e999 is out of range",),
    ),
    "config_negative_size": (_config(_set("n_embd", -32)), 1, ("param 'd_model' is -32",)),
    "config_huge_size": (  # the memory estimate is checked on every device, before the plan
        _config(_set("n_embd", 10**8)),
        2,
        ("the model needs about 873115.0 TiB for 240,000,010,500,000,000 parameters",),
    ),
    "config_size_overflowing_int64": (
        _config(_set("n_embd", 10**12)),
        1,
        ("more than 2**63 - 1 elements (int64 overflows)",),
    ),
    "config_huge_layer_count": (
        _config(_set("n_layer", 10**12)),
        1,
        ("'repeat' is 1,000,000,000,000; the limit is 20,000",),
    ),
    "config_size_of_wrong_type": (_config(_set("n_head", "4")), 1, ("param 'h' must be int",)),
    "config_duplicate_key": (
        _config(lambda c: json.dumps(c)[:-1] + ', "n_layer": 3}'),
        2,
        ("the key 'n_layer' appears twice",),
    ),
    "config_not_an_object": (_config_text("[1, 2]"), 2, ("is not a JSON object",)),
    "config_too_large": (
        _config_text('{"pad": "' + "x" * (17 * 1024 * 1024) + '"}'),
        2,
        ("archcomp reads at most 16,777,216",),
    ),
    "config_model_type_not_text": (_config(_set("model_type", 5)), 2, ("no model_type string",)),
    "index_shard_outside_folder": (
        _index(lambda names: {n: "../ARCHCOMP_CANARY.safetensors" for n in names}),
        2,
        ("shards are .safetensors files in the checkpoint folder, named without a path",),
    ),
    "index_absolute_shard": (
        _index(lambda names: {n: "/etc/passwd" for n in names}),
        2,
        ("named without a path",),
    ),
    "index_missing_shard": (
        _index(lambda names: {n: "model-00002-of-00002.safetensors" for n in names}),
        2,
        ("which",),
    ),
    "index_disagrees_with_shard": (
        _index(lambda names: {n: "model-00001-of-00001.safetensors" for n in names[1:]}),
        2,
        ("which model.safetensors.index.json places nowhere",),
    ),
    "mapping_python_tag": (_mapping(_CANARY_MAPPING), 1, ("is not allowed in a spec",)),
    "mapping_absolute_spec": (
        _mapping(_ABSOLUTE_MAPPING),
        1,
        ("is not a path relative to the mapping file",),
    ),
}


def checkpoint_jobs(tmp: Path) -> list[Job]:
    """One ``archcomp convert`` job per case, plus the good folder's (which must convert)."""
    base = tmp / "checkpoints"
    good = good_checkpoint(base / "good")
    jobs: list[Job] = []
    for name, (edit, code, contains) in CHECKPOINT_CASES.items():
        folder = base / name
        shutil.copytree(good, folder)
        edit(folder)
        out = base / f"{name}.out"
        out.mkdir()
        argv = ["convert", str(folder), "-o", str(out / "model.safetensors")]
        mapping = base / f"{name}.mapping.yaml"
        if mapping.exists():
            argv += ["--mapping", str(mapping)]
        keep = {p: p.read_bytes() for p in sorted(folder.iterdir())}
        jobs.append(
            Job(
                f"checkpoints/{name}:convert",
                "cli",
                argv=argv,
                cwd=str(base),
                exit=code,
                contains=contains,
                outdir=out,
                keep=keep,
            )
        )
    from hostile_support.checkpoint_attacks import attack_jobs

    jobs += attack_jobs(base, good)
    out = base / "good.out"
    out.mkdir()
    jobs.append(
        Job(
            "checkpoints/good:convert",
            "cli",
            argv=["convert", str(good), "-o", str(out / "model.safetensors")],
            cwd=str(base),
            exit=0,
        )
    )
    return jobs
