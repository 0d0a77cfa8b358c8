"""Checkpoint folders on disk: config.json, safetensors headers, shard indexes. Reads no tensor.

A checkpoint is a local folder with ``config.json`` and either ``model.safetensors`` or a
sharded ``model.safetensors.index.json`` with its shards. Everything is checked before use:

- pickled weights (``pytorch_model.bin``, ``*.pt``, ``*.pth``, a pickle or zip renamed
  ``.safetensors``) are refused, never opened with torch or pickle;
- JSON files (config.json, the index) have a size limit, no duplicate keys, no NaN or
  Infinity, no numbers of absurd length, bounded nesting;
- each safetensors header: a sane length, a JSON object, known dtypes, and tensors whose
  offsets tile the file exactly, each sized by its shape (so a billion-element tensor declared
  over a few bytes is refused before any read);
- an index names shards by plain file names inside the folder, and agrees with their headers;
- every file read (config.json, the weights, the index, each shard) is a regular file inside
  the folder, symlinks followed (:func:`archcomp.base.paths.confined`, the rule spec imports
  and mappings' ``spec:`` follow too), so a symlink out of the folder is refused unread.

Problems are :class:`CheckpointFileError` (a usage error: exit status 2) naming the file.
:func:`write_safetensors` is the writer ``export`` uses: a header from shapes, then one tensor
at a time.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archcomp.backends.torch.artifact import (
    DTYPE_CODES,
    MAX_HEADER,
    SAFETENSORS_DTYPES,
    ArtifactError,
    _check_layout,
    _is_pickle,
)
from archcomp.base import gcpause
from archcomp.base.documents import Marks, SourceDoc
from archcomp.base.errors import UsageError
from archcomp.base.fileio import TooLarge, open_regular, read_regular
from archcomp.base.paths import OutsideFolder, confined
from archcomp.base.text import visible

if TYPE_CHECKING:
    import torch

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_NUMBER_DIGITS = 100
MAX_SHARDS = 10_000
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_SHARD_NAME = re.compile(r"[A-Za-z0-9_.\-]+\.safetensors\Z")
# Each byte that may be part of a JSON number as b"1", any other as b"0" (for bytes.translate).
_NUMBER_BYTES = bytes(49 if chr(b) in "-+.eE0123456789" else 48 for b in range(256))


class CheckpointFileError(UsageError):
    """A checkpoint folder or file archcomp cannot or will not read."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a safetensors header declares it."""

    file: Path
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors code: F32, BF16, ...

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class Checkpoint:
    """A checked checkpoint folder: its config and the tensors its files declare."""

    folder: Path
    config: dict[str, Any]
    config_doc: SourceDoc  # config.json's text and top-level key positions, for diagnostics
    tensors: dict[str, TensorInfo]
    files: list[Path]

    @property
    def weights_name(self) -> str:
        return self.files[0].name if len(self.files) == 1 else INDEX


def _pickle_message(path: Path) -> str:
    return (
        f"{path} is a pickle (torch.save) file; archcomp never unpickles, because loading a "
        "pickle can run any code it carries. Save the weights as safetensors instead: "
        "transformers' save_pretrained writes model.safetensors by default"
    )


def open_checkpoint(path: Path) -> Checkpoint:
    """Check a checkpoint folder and read its config and tensor headers."""
    if not path.exists():
        raise CheckpointFileError(f"{path}: no such checkpoint folder")
    if not path.is_dir():
        if path.suffix in PICKLE_SUFFIXES or _looks_pickled(path):
            raise CheckpointFileError(_pickle_message(path))
        raise CheckpointFileError(
            f"{path} is a file; a checkpoint is a folder with {CONFIG} and {WEIGHTS} (or a "
            f"sharded {INDEX})"
        )
    config_path = member(path, CONFIG)
    if not config_path.is_file():
        raise CheckpointFileError(
            f"{path} has no {CONFIG}; a checkpoint folder holds {CONFIG} and {WEIGHTS}"
        )
    text = _read_text(config_path, MAX_JSON_BYTES)
    config = _parse_json(text, config_path)
    if not isinstance(config, dict):
        raise CheckpointFileError(f"{config_path} is not a JSON object")
    marks = Marks(_top_keys(text))
    doc = SourceDoc(str(config_path), config_path, text.splitlines(), key_marks=marks)
    doc.value_marks.update({k: v for k, v in doc.key_marks.items()})
    single, index = member(path, WEIGHTS), member(path, INDEX)
    if single.is_file():
        files = [single]
        tensors = _tensors(single)
    elif index.is_file():
        files, tensors = _sharded(path, index)
    else:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointFileError(_pickle_message(path / pickles[0]))
        raise CheckpointFileError(f"{path} has neither {WEIGHTS} nor {INDEX}")
    return Checkpoint(path, config, doc, tensors, files)


def member(folder: Path, name: str) -> Path:
    """The file ``name`` of a checkpoint folder, refused if it leads out of the folder."""
    try:
        return confined(folder, name)
    except OutsideFolder as exc:
        raise CheckpointFileError(
            f"{folder}: '{visible(name)}' {exc}; a checkpoint's files are inside its folder"
        ) from None


def _looks_pickled(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and _is_pickle(head))


def _read_text(path: Path, limit: int) -> str:
    try:
        data = read_regular(path, limit)
    except TooLarge as exc:
        raise CheckpointFileError(
            f"{path} is {exc.size:,} bytes; archcomp reads at most {limit:,}"
        ) from None
    except OSError as exc:
        raise CheckpointFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointFileError(f"{path} is not UTF-8 text") from None


def _parse_json(text: str, path: Path) -> Any:
    def at(token: str) -> str:
        """``path:line:col`` of the first occurrence of ``token`` (the json module does not
        tell a hook where its token is; the first one is the one it is parsing, or one
        before it that was refused the same way)."""
        found = text.find(token)
        if found < 0:
            return str(path)
        line = text.count("\n", 0, found) + 1
        return f"{path}:{line}:{found - text.rfind(chr(10), 0, found)}"

    def no_constant(name: str) -> Any:
        raise CheckpointFileError(f"{at(name)}: {name} is not a JSON number; archcomp refuses it")

    def number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
        def parse(s: str) -> Any:
            if len(s) > MAX_NUMBER_DIGITS:  # before int(): never a 4,300-digit conversion
                raise CheckpointFileError(
                    f"{at(s)}: a number of {len(s):,} characters; archcomp reads at most "
                    f"{MAX_NUMBER_DIGITS}"
                )
            value = kind(s)
            if isinstance(value, float) and not math.isfinite(value):
                raise CheckpointFileError(f"{at(s)}: the number {s} is out of range")
            return value

        return parse

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)  # built in C; the loop below runs only when a key repeats
        if len(out) != len(pairs):
            seen: set[str] = set()
            for k, _ in pairs:
                if k in seen:
                    raise CheckpointFileError(f"{path}: the key '{visible(k)}' appears twice")
                seen.add(k)
        return out

    # An int is checked only if the text has a run of number characters long enough to hold
    # a refused one: otherwise json's own int() reads each (a header holds 600,000 of them).
    long_run = _has_number_run(text, MAX_NUMBER_DIGITS + 1)
    try:
        with gcpause.paused():  # 200,000 header entries, all live until they are returned
            return json.loads(
                text,
                object_pairs_hook=no_duplicates,
                parse_constant=no_constant,
                parse_float=number(float),
                parse_int=number(int) if long_run else None,
            )
    except json.JSONDecodeError as exc:
        raise CheckpointFileError(
            f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
        ) from None
    except RecursionError:
        raise CheckpointFileError(f"{path}: JSON nested too deeply") from None


def _has_number_run(text: str, length: int) -> bool:
    """Whether ``text`` has ``length`` characters in a row that may be part of a JSON number
    (a number that long has; text may too). In C: 30 ms for a 16 MB header, a regex 150."""
    return text.encode().translate(_NUMBER_BYTES).find(b"1" * length) >= 0


def _top_keys(text: str) -> dict[tuple[str | int, ...], tuple[int, int]]:
    """Line and column of each top-level key of a JSON object (for located diagnostics)."""
    marks: dict[tuple[str | int, ...], tuple[int, int]] = {}
    depth, i, line, start = 0, 0, 1, 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line, start = line + 1, i + 1
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if depth == 1 and text[j + 1 : j + 40].lstrip().startswith(":"):
                try:
                    key = json.loads(text[i : j + 1])
                except json.JSONDecodeError:
                    key = None
                if isinstance(key, str):
                    marks.setdefault((key,), (line, i - start + 1))
            i = j
        i += 1
    return marks


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A safetensors file's tensor entries and metadata, every offset checked."""
    display = str(path)
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointFileError(f"{display} is not a safetensors file: {size} bytes")
            (n,) = struct.unpack("<Q", head)
            length_ok = 0 < n <= MAX_HEADER and 8 + n <= size
            json_next = length_ok and f.read(1) == b"{"
            if not json_next and (head.startswith(b"PK\x03\x04") or _is_pickle(head)):
                raise CheckpointFileError(_pickle_message(path))
            if not length_ok:
                raise CheckpointFileError(
                    f"{display} is not a safetensors file: its first 8 bytes give a header "
                    f"length of {n:,} for a file of {size:,} bytes"
                )
            f.seek(8)
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointFileError(f"{display}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointFileError(f"{display}: its safetensors header is not UTF-8") from None
    with gcpause.paused():  # the checks below make an object per entry, all kept till return
        return _checked_header(path, _parse_json(text, path), size - 8 - n)


def _checked_header(
    path: Path, header: Any, data_size: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """A parsed safetensors header's entries and metadata, after checking both."""
    display = str(path)
    if not isinstance(header, dict):
        raise CheckpointFileError(f"{display}: its safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointFileError(f"{display}: its safetensors metadata is not text")
    for name, entry in header.items():
        code = entry.get("dtype") if isinstance(entry, dict) else None
        if type(code) is not str or code not in SAFETENSORS_DTYPES:  # a list is unhashable
            raise CheckpointFileError(
                f"{display}: tensor '{visible(name)}' has dtype {code!r}; archcomp reads "
                + ", ".join(SAFETENSORS_DTYPES)
            )
    try:
        _check_layout(path, header, data_size)
    except ArtifactError as exc:
        raise CheckpointFileError(str(exc)) from None
    return header, meta


def _tensors(path: Path) -> dict[str, TensorInfo]:
    with gcpause.paused():  # one object per tensor, all kept
        header, _ = read_header(path)
        return {
            name: TensorInfo(path, name, tuple(e["shape"]), e["dtype"])
            for name, e in header.items()
        }


def _sharded(folder: Path, index: Path) -> tuple[list[Path], dict[str, TensorInfo]]:
    data = _parse_json(_read_text(index, MAX_JSON_BYTES), index)
    wmap = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
        raise CheckpointFileError(f"{index}: no 'weight_map' of tensor name -> shard file")
    shards = sorted(set(wmap.values()))
    if len(shards) > MAX_SHARDS:
        raise CheckpointFileError(
            f"{index} names {len(shards):,} shards; the limit is {MAX_SHARDS:,}"
        )
    files = []
    for name in shards:
        if not _SHARD_NAME.match(name) or name.startswith("."):
            raise CheckpointFileError(
                f"{index} names the shard {name!r}; shards are .safetensors files in the "
                "checkpoint folder, named without a path"
            )
        p = member(folder, name)
        if not p.is_file():
            raise CheckpointFileError(f"{index} names the shard {name}, which {folder} lacks")
        files.append(p)
    tensors: dict[str, TensorInfo] = {}
    for p in files:
        for name, info in _tensors(p).items():
            if wmap.get(name) != p.name:
                where = f"in {wmap[name]}" if name in wmap else "nowhere"
                raise CheckpointFileError(
                    f"{p} holds tensor '{visible(name)}', which {index.name} places {where}"
                )
            tensors[name] = info
    lost = sorted(set(wmap) - set(tensors))
    if lost:
        raise CheckpointFileError(
            f"{index.name} places tensor '{visible(lost[0])}' in {wmap[lost[0]]}, whose header "
            "lacks it" + (f" (and {len(lost) - 1} more)" if len(lost) > 1 else "")
        )
    return files, tensors


def torch_dtype(code: str) -> torch.dtype:
    return SAFETENSORS_DTYPES[code]


def write_safetensors(
    path: Path,
    entries: list[tuple[str, tuple[int, ...], str]],
    tensors: Iterable[torch.Tensor],
    metadata: dict[str, str],
) -> None:
    """Write a safetensors file into ``path`` (opened in place): the header from ``entries``
    (name, shape, dtype code; sorted by name), then each tensor of ``tensors`` in that order,
    so only one tensor need exist at a time."""
    import torch

    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, shape, code in entries:
        size = math.prod(shape) * SAFETENSORS_DTYPES[code].itemsize
        header[name] = {
            "dtype": code,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    head += b" " * (-len(head) % 8)
    it: Iterator[torch.Tensor] = iter(tensors)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for name, shape, code in entries:
            t = next(it)
            if tuple(t.shape) != tuple(shape) or DTYPE_CODES.get(t.dtype) != code:
                raise RuntimeError(
                    f"{name}: made {tuple(t.shape)} {t.dtype}, declared {shape} {code}"
                )
            if t.numel():
                data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
                f.write(data.numpy().data)
