"""Artifacts: weights as safetensors, with the spec they were built from embedded in the header.

Header metadata (all strings, as safetensors requires):

- ``format``: ``pt``
- ``archcomp.version``: the archcomp that wrote it
- ``archcomp.spec``: JSON ``{"main": ..., "files": {...}, "params": {...}}``: the text of every
  spec file the build read, by path relative to the top-level spec's folder (``main`` names
  the top-level one), and the ``-p`` overrides with their types. Loading parses the same texts
  with the same overrides, so it rebuilds exactly the graph that was built; imports are read
  from ``files``, never from the disk. (Artifacts of archcomp 0.1 hold the normalized spec
  mapping instead; they still load, without imports.)
- ``archcomp.spec_sha256``: SHA-256 of that JSON text
- ``archcomp.weights_sha256``: SHA-256 over the tensors (sorted by name: name, dtype, shape,
  bytes), so a changed weight is refused too
- ``archcomp.ties``: JSON object, alias key -> stored key, for tied weights (stored once)
- ``archcomp.dtype``: the floating dtype the model was built in

Loading never unpickles: the header is JSON, the tensors raw bytes. Writes are atomic: a
temporary file in the target's folder, renamed over the target only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archcomp.backends.torch.devices import (
    MAX_INIT_FLOPS,
    dtype_name,
    resolve_device,
    resolve_dtype,
)
from archcomp.backends.torch.module import tied_names
from archcomp.base.errors import UsageError
from archcomp.base.fileio import NotRegularFile, OutputExists, Writer, open_regular, write_atomic
from archcomp.base.gcpause import paused
from archcomp.base.progress import Update, ignore, showing, task
from archcomp.base.text import visible

MAX_HEADER = 100 * 1024 * 1024
INT64_MAX = 2**63 - 1
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_CODES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


class ArtifactError(UsageError):
    """A file that is not a valid archcomp artifact, or one that does not match its spec."""


def spec_json(spec: Mapping[str, Any]) -> str:
    # Key order is meaning: inputs are the forward's argument order, outputs the dict's order.
    return json.dumps(spec, separators=(",", ":"), ensure_ascii=False)


def embedded_spec(model: nn.Module) -> dict[str, Any]:
    """What an artifact stores to rebuild ``model``: its spec texts and typed overrides (the
    normalized mapping for a model that has none)."""
    source = getattr(model, "source", None)
    if isinstance(source, dict) and source.get("files"):
        return source
    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict) or not spec:
        raise UsageError("save() needs a model built by archcomp (it embeds the model's spec)")
    return spec


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def flat_bytes(t: torch.Tensor) -> memoryview:
    """``t``'s bytes in row-major order: its own memory when it is a contiguous CPU tensor."""
    t = t.detach()
    if t.device.type != "cpu" or not t.is_contiguous():
        t = t.to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().data


class _WeightsHash:
    """SHA-256 over tensors given in name order: name, dtype, shape, bytes (read in place)."""

    def __init__(self, tick: Update = ignore) -> None:
        self.h = hashlib.sha256()
        self.tick = tick
        self.done = 0

    def add(self, name: str, t: torch.Tensor, raw: memoryview | None = None) -> None:
        """Hash ``t``; ``raw``, when given, is its bytes (``flat_bytes(t)``)."""
        h = self.h
        h.update(name.encode() + b"\0" + DTYPE_CODES.get(t.dtype, str(t.dtype)).encode())
        h.update(b"\0" + ",".join(str(s) for s in t.shape).encode() + b"\0")
        if t.numel():  # the tensor's own memory, no copy (a model's views stay lean)
            h.update(flat_bytes(t) if raw is None else raw)
            self.done += t.numel() * t.element_size()
            self.tick(self.done)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _weights_hash(
    tensors: Iterable[tuple[str, torch.Tensor]],
    tick: Update = ignore,
    raws: Mapping[str, memoryview] | None = None,
) -> str:
    """The weights' digest; ``raws`` holds the bytes of some of them, read once."""
    h = _WeightsHash(tick)
    raws = raws or {}
    for name, t in sorted(tensors, key=lambda kv: kv[0]):
        h.add(name, t, raws.get(name))
    return h.hexdigest()


def _canonical_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    state = model.state_dict()
    aliases = {k: v for k, v in tied_names(model).items() if k in state and v in state}
    tensors = {k: t for k, t in state.items() if k not in aliases}
    return tensors, aliases


def save_artifact(
    model: nn.Module,
    path: Path,
    *,
    overwrite: bool = True,
    progress: bool | None = None,
    force_flag: str = "--force",
) -> Path:
    """Write weights + embedded spec to ``path`` atomically; return the path. Without
    ``overwrite`` an existing ``path`` is refused, atomically (see ``write_all``), naming
    ``force_flag`` as the remedy. ``progress`` shows hashing and writing as
    :func:`archcomp.build` shows allocation."""
    exists = f"{path} exists; pass {force_flag} to overwrite it"
    if path.exists() and not overwrite:
        raise UsageError(exists)
    try:
        write_atomic(
            path, artifact_writer(model, progress=progress, label=path.name), overwrite=overwrite
        )
    except OutputExists:
        raise UsageError(exists) from None
    return path


@paused()  # an entry per tensor, all live until it returns
def artifact_writer(
    model: nn.Module, *, progress: bool | None = None, label: str = "weights"
) -> Writer:
    """What writes ``model``'s artifact into a path: checked and hashed now, so that a command
    can write it together with its other outputs, all or none."""
    from archcomp.base.version import __version__

    spec = embedded_spec(model)
    tensors, aliases = _canonical_state(model)
    for name, t in tensors.items():
        if t.device.type == "meta":
            raise UsageError(
                f"the model is on the meta device ({name} has no data); build it on a real "
                "device to save weights"
            )
    try:
        text = spec_json(spec)
    except (TypeError, ValueError) as exc:  # an override from the API that JSON cannot hold
        raise UsageError(f"the model's params cannot be stored in an artifact: {exc}") from None
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    raws = {  # read in place for the hash and the file alike: no copy, made once
        k: flat_bytes(t)
        for k, t in tensors.items()
        if t.device.type == "cpu" and t.numel() and t.is_contiguous()
    }
    with showing(progress), task("hashing weights", size) as tick:
        digest = _weights_hash(tensors.items(), tick, raws)
    floats = [t.dtype for t in tensors.values() if t.is_floating_point()]
    meta = {
        "format": "pt",
        "archcomp.version": __version__,
        "archcomp.spec": text,
        "archcomp.spec_sha256": spec_hash(text),
        "archcomp.weights_sha256": digest,
        "archcomp.ties": json.dumps(aliases, sort_keys=True),
        "archcomp.dtype": dtype_name(floats[0]) if floats else "float32",
    }
    data = {k: t.detach() for k, t in tensors.items()}  # made contiguous one at a time

    def write(tmp: Path) -> None:
        with paused(), showing(progress), task(f"writing {label}", size) as tick:
            _write_safetensors(tmp, data, meta, tick, raws)

    return write


def safetensors_header(
    tensors: Mapping[str, torch.Tensor], names: Iterable[str], meta: Mapping[str, str]
) -> bytes:
    """The JSON header of a safetensors file holding ``tensors`` in the order of ``names``,
    padded to 8 bytes (the 8-byte length before it is the caller's to write)."""
    header: dict[str, Any] = {"__metadata__": dict(meta)}
    offset = 0
    for name in names:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {
            "dtype": DTYPE_CODES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return head + b" " * (-len(head) % 8)


def _write_safetensors(
    path: Path,
    data: Mapping[str, torch.Tensor],
    meta: dict[str, str],
    tick: Update = ignore,
    raws: Mapping[str, memoryview] | None = None,
) -> None:
    """The safetensors format, streamed into ``path`` opened in place: safetensors' own
    ``save_file`` writes a temporary file of its own and renames it (which defeats
    :func:`write_atomic` and leaves its temporary behind when killed)."""
    import sys

    if sys.byteorder != "little":  # pragma: no cover - safetensors is little-endian
        from safetensors.torch import save

        with open(path, "wb") as f:
            f.write(save({k: t.contiguous() for k, t in data.items()}, metadata=meta))
        return
    head = safetensors_header(data, sorted(data), meta)
    raws = raws or {}
    done = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for name in sorted(data):
            t = data[name]
            if t.numel():
                raw = raws.get(name)
                f.write(flat_bytes(t) if raw is None else raw)
                done += t.numel() * t.element_size()
                tick(done)


def _is_pickle(head: bytes) -> bool:
    """Pickle protocol 2-5 starts with PROTO (0x80) and the protocol number."""
    return head[:1] == b"\x80" and 2 <= head[1] <= 5


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensor entries and metadata of a safetensors file, with a specific reason if it is not."""
    try:
        f = open_regular(path)  # decided on the open file: a FIFO never blocks the load
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except NotRegularFile as exc:
        raise ArtifactError(f"{path} is {exc.strerror}") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise ArtifactError(f"{path} is not a safetensors file: only {size} bytes")
        (n,) = struct.unpack("<Q", head)
        length_ok = 0 < n <= MAX_HEADER and 8 + n <= size
        json_next = length_ok and f.read(1) == b"{"  # a safetensors header is a JSON object
        f.seek(8)
        # A header length's low byte may be 0x80, so the pickle signature only decides when
        # the first bytes are no safetensors header.
        if not json_next and (head.startswith(b"PK\x03\x04") or _is_pickle(head)):
            raise ArtifactError(
                f"{path} looks like a torch.save (pickle) file; archcomp never unpickles. "
                "Write artifacts with archcomp.save or 'archcomp build'"
            )
        if not length_ok:
            raise ArtifactError(
                f"{path} is not a safetensors file: its first 8 bytes give a header length of "
                f"{n} for a file of {size} bytes"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _DuplicateName as exc:
        raise ArtifactError(
            f"{path} is not a valid safetensors file: the name '{exc.args[0]}' appears twice "
            "in its header"
        ) from None
    except ValueError as exc:  # not JSON (JSONDecodeError), or a number too long to read
        why = "its header is not JSON"
        if _too_long(exc):
            why = "its header holds a number of over 4,300 digits"
        raise ArtifactError(f"{path} is not a safetensors file: {why}") from None
    except RecursionError:
        raise ArtifactError(f"{path} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path} is not a safetensors file: its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or "archcomp.spec" not in meta:
        raise ArtifactError(
            f"{path} is a safetensors file but not an archcomp artifact (no embedded spec); "
            "write one with archcomp.save or 'archcomp build'"
        )
    if not all(isinstance(v, str) for v in meta.values()):
        raise ArtifactError(f"{path} is not a valid safetensors file: its metadata is not text")
    _check_layout(path, header, size - 8 - n)
    return header, meta


class _DuplicateName(Exception):
    pass


def _too_long(exc: ValueError) -> bool:
    """Python's refusal to read an int of 4,300+ digits, rather than bad JSON."""
    return not isinstance(exc, json.JSONDecodeError) and "digits" in str(exc)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateName(k)
        out[k] = v
    return out


def _check_layout(path: Path, entries: Mapping[str, Any], data_size: int) -> None:
    """Every tensor's bytes lie inside the file, sized by its shape, none overlapping, no gap.

    One plain loop per entry (no generator or ``all()`` per field): a header may hold
    200,000 entries."""
    spans: list[tuple[int, int, str]] = []
    itemsizes = {code: dt.itemsize for code, dt in SAFETENSORS_DTYPES.items()}
    for name, e in entries.items():
        numel = _entry_numel(e)
        if numel is None:
            raise ArtifactError(
                f"{path} is not a valid safetensors file: tensor '{visible(name)}' has a "
                "malformed entry"
            )
        begin, stop = e["data_offsets"]
        itemsize = itemsizes.get(str(e.get("dtype")))
        if itemsize is not None and numel * itemsize != stop - begin:
            raise ArtifactError(
                f"{path} is not a valid safetensors file: tensor '{visible(name)}' of shape "
                f"{e['shape']} "
                f"({e.get('dtype')}) needs {numel * itemsize} bytes but its offsets give "
                f"{stop - begin}"
            )
        spans.append((begin, stop, name))
    spans.sort()
    end, last = 0, None
    for begin, stop, name in spans:
        if begin < end:
            raise ArtifactError(
                f"{path} is not a valid safetensors file: tensors '{visible(str(last))}' and "
                f"'{visible(name)}' overlap "
                f"(bytes {begin}..{end} are claimed by both)"
            )
        if begin > end:
            raise ArtifactError(
                f"{path} is not a valid safetensors file: {begin - end} bytes before tensor "
                f"'{visible(name)}' belong to no tensor"
            )
        end, last = stop, name
    if end > data_size:
        raise ArtifactError(
            f"{path} is truncated: its tensors need {end} bytes of data, the file holds {data_size}"
        )
    if end < data_size:
        raise ArtifactError(
            f"{path} is not a valid safetensors file: {data_size - end} bytes after the last "
            "tensor belong to no tensor"
        )


def _entry_numel(e: Any) -> int | None:
    """The element count of a well-formed header entry (``data_offsets``: two ints in order,
    ``shape``: at most 64 ints, all in 0..INT64_MAX), or None."""
    if not isinstance(e, dict):
        return None
    offsets, shape = e.get("data_offsets"), e.get("shape")
    if not isinstance(offsets, list) or len(offsets) != 2 or not isinstance(shape, list):
        return None
    begin, stop = offsets
    if type(begin) is not int or type(stop) is not int or not 0 <= begin <= stop <= INT64_MAX:
        return None
    if len(shape) > 64:
        return None
    numel = 1
    for d in shape:
        if type(d) is not int or not 0 <= d <= INT64_MAX:
            return None
        numel *= d
    return numel


def embedded_metadata(path: Path, meta: Mapping[str, str]) -> tuple[str, Any, dict[str, str]]:
    """An artifact's embedded spec text, the spec (JSON) and its ties, each checked: the one
    check every loader (:func:`load_artifact`, the sharded loader) runs on this metadata."""
    text = meta.get("archcomp.spec")
    if not isinstance(text, str):
        raise ArtifactError(f"{path}: no embedded archcomp.spec; not an archcomp artifact")
    if spec_hash(text) != meta.get("archcomp.spec_sha256"):
        raise ArtifactError(
            f"{path}: the embedded spec does not match its SHA-256; the file was modified "
            "after it was written"
        )
    try:
        spec = json.loads(text)
        ties = json.loads(meta.get("archcomp.ties", "{}"))
    except (ValueError, RecursionError):  # not JSON, or a number of 4,300+ digits
        raise ArtifactError(f"{path}: the embedded metadata is not valid JSON") from None
    if not isinstance(ties, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in ties.items()
    ):
        raise ArtifactError(f"{path}: the embedded archcomp.ties is not a mapping of names")
    return text, spec, ties


def artifact_graph(path: Path) -> Any:
    """The checked graph of the spec an artifact embeds (its SHA-256 verified); no weight is
    read: what ``archcomp summary``, ``check`` and ``draw`` of an artifact show."""
    _, meta = read_header(path)
    text, spec, _ = embedded_metadata(path, meta)
    return _embedded_graph(path, spec, text)


@paused()  # the graph and the modules of its rebuild: all live until it returns
def load_artifact(
    path: Path, device: Any = None, dtype: Any = None, *, max_memory: int | str | None = None
) -> Any:
    """Verify and rebuild; see :func:`archcomp.load`."""
    from safetensors import safe_open

    from archcomp.backends.torch.build import build_graph

    entries, meta = read_header(path)
    text, spec, ties = embedded_metadata(path, meta)
    g = _embedded_graph(path, spec, text)
    stored = resolve_dtype(meta.get("archcomp.dtype", "float32"))
    want = resolve_dtype(dtype) if dtype is not None else stored
    dev = resolve_device(device)
    # One build, on the device, without the spec's initializers (the weights are loaded next);
    # its peak, plus the largest tensor as read from the file, is checked before allocating.
    largest = max((_entry_bytes(e) for e in entries.values()), default=0)
    model = build_graph(
        g,
        device=dev,
        dtype=want,
        seed=0,
        max_memory=max_memory,
        init=False,
        max_init_flops=MAX_INIT_FLOPS,  # no initializers run, but the tables are computed
        extra_bytes=largest,
    )
    expected, aliases = _canonical_state(model)
    _compare(path, entries, expected, aliases, ties, stored)
    digest = _WeightsHash()
    try:
        with torch.no_grad(), safe_open(str(path), framework="pt", device="cpu") as f:
            for name in sorted(expected):
                t = f.get_tensor(name)
                digest.add(name, t)
                expected[name].copy_(t)
                del t  # one tensor read at a time
    except (OSError, RuntimeError, ValueError, MemoryError) as exc:  # MemoryError: mmap failed
        raise ArtifactError(f"{path}: cannot read the weights: {exc}") from None
    except Exception as exc:  # safetensors' own error type (SafetensorError)
        if type(exc).__name__ != "SafetensorError":
            raise
        raise ArtifactError(f"{path}: cannot read the weights: {exc}") from None
    if digest.hexdigest() != meta.get("archcomp.weights_sha256"):
        raise ArtifactError(
            f"{path}: the weights do not match their SHA-256; the file was modified after "
            "it was written"
        )
    return model


def _entry_bytes(e: Any) -> int:
    offsets = e.get("data_offsets") if isinstance(e, dict) else None
    return int(offsets[1] - offsets[0]) if isinstance(offsets, list) else 0


def _embedded_graph(path: Path, spec: Any, text: str) -> Any:
    """The checked graph of an embedded spec: its stored texts and typed overrides, or (an
    artifact of archcomp 0.1) a self-contained normalized mapping."""
    from archcomp.frontend.loader import load_program
    from archcomp.passes.pipeline import check_program

    if isinstance(spec, dict) and "files" in spec and "main" in spec:
        files, main, params = spec["files"], spec["main"], spec.get("params", {})
        if not (
            isinstance(files, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
            and isinstance(main, str)
            and main in files
            and isinstance(params, dict)
            and all(isinstance(k, str) for k in params)
        ):
            raise ArtifactError(
                f"{path}: the embedded spec is not a mapping of spec texts with a main file and "
                "params"
            )
        prog = load_program(main, embedded=files, label=path.name)
        return check_program(prog, params)
    if not isinstance(spec, dict) or "imports" in spec:
        # archcomp 0.1 wrote a self-contained mapping; imports would read files beside it
        raise ArtifactError(
            f"{path}: the embedded spec is not a self-contained spec mapping (archcomp never "
            "writes one with imports)"
        )
    # Read as the JSON text it is (JSON is YAML): no re-dump, and nothing beside it is read.
    prog = load_program("spec.json", embedded={"spec.json": text}, label=path.name)
    return check_program(prog, {})


def _compare(
    path: Path,
    entries: Mapping[str, Any],
    expected: Mapping[str, torch.Tensor],
    aliases: Mapping[str, str],
    ties: Mapping[str, str],
    stored: torch.dtype,
) -> None:
    """The file's tensors must be the rebuilt model's: names, shapes, and dtypes (floating
    ones in the dtype the file was written in)."""
    problems: list[str] = []
    missing = sorted(set(expected) - set(entries))
    extra = sorted(set(entries) - set(expected))
    if missing:
        problems.append("missing tensors: " + ", ".join(missing[:10]))
    if extra:
        problems.append("unexpected tensors: " + ", ".join(extra[:10]))
    for name in sorted(set(expected) & set(entries)):
        e = entries[name]
        t = expected[name]
        if not isinstance(e, dict):
            problems.append(f"{name}: malformed entry")
            continue
        shape = list(e.get("shape", []))
        if shape != list(t.shape):
            problems.append(f"{name}: shape {shape} in the file, {list(t.shape)} in the spec")
        code = DTYPE_CODES.get(stored if t.is_floating_point() else t.dtype)
        if e.get("dtype") != code:
            problems.append(f"{name}: dtype {e.get('dtype')} in the file, {code} in the spec")
    if dict(ties) != dict(aliases):
        problems.append(f"tied weights {dict(ties)} in the file, {dict(aliases)} in the spec")
    if problems:
        raise ArtifactError(
            f"{path} does not match its embedded spec:\n  " + "\n  ".join(problems[:20])
        )
