"""Sharded weights on disk, and archcomp artifacts written and read by a sharded model.

- :func:`save_sharded` / :func:`load_sharded`: a ``torch.distributed.checkpoint`` (DCP)
  folder; every rank writes and reads only its shards. The folder also holds
  ``archcomp-spec.json`` (the model's embedded spec), and loading into a model of another
  spec is refused.
- :func:`gather_artifact`: the ordinary artifact :func:`archcomp.save` writes (the same bytes
  for the same weights), streamed: the tensors are gathered one at a time, in the file's
  order, and rank 0 writes each before gathering the next; no rank holds more than one full
  tensor. The weights' SHA-256 is computed while writing and patched into the header (its
  length is fixed), so nothing is read twice.
- :func:`load_artifact_sharded`: each rank reads only the rows of its shards from the
  safetensors file (``safe_open`` slices). Names, shapes, dtypes, ties and the spec's
  SHA-256 are checked; the weights' SHA-256 cannot be (no rank reads every tensor): use
  :func:`archcomp.load` to verify a file.

All four are collective: every rank calls them, with the same arguments.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
from torch.distributed.tensor import DTensor

from archcomp.backends.torch.artifact import (
    ArtifactError,
    _canonical_state,
    _compare,
    _WeightsHash,
    embedded_metadata,
    embedded_spec,
    read_header,
    safetensors_header,
    spec_hash,
    spec_json,
)
from archcomp.backends.torch.devices import dtype_name, resolve_dtype
from archcomp.base.errors import UsageError
from archcomp.base.fileio import write_atomic
from archcomp.distributed.fsdp import require_process_group

SPEC_FILE = "archcomp-spec.json"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _spec_text(model: nn.Module) -> str:
    return spec_json(embedded_spec(model))


def save_sharded(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model``'s weights (sharded or not) as a DCP checkpoint folder, each rank its
    own shards, with the model's spec beside them."""
    require_process_group()
    path = Path(directory)
    text = _spec_text(model)
    if _rank() == 0:
        path.mkdir(parents=True, exist_ok=True)
        (path / SPEC_FILE).write_text(text, encoding="utf-8")
    _barrier()
    dcp.save(get_model_state_dict(model), checkpoint_id=str(path))
    return path


def load_sharded(model: nn.Module, directory: str | Path) -> nn.Module:
    """Fill ``model`` (sharded as it was saved, or otherwise: DCP reshards) from a folder
    :func:`save_sharded` wrote; a folder of another spec is refused."""
    require_process_group()
    path = Path(directory)
    try:
        stored = (path / SPEC_FILE).read_text(encoding="utf-8")
    except OSError:
        raise UsageError(f"{path} is not a sharded archcomp checkpoint (no {SPEC_FILE})") from None
    if stored != _spec_text(model):
        raise UsageError(f"{path} holds the weights of another spec (or other params)")
    state = get_model_state_dict(model)
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state)
    return model


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor, gathered from every rank (collective) when sharded."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def gather_artifact(model: nn.Module, path: str | Path) -> Path | None:
    """Write a sharded ``model`` as an archcomp artifact at ``path`` (rank 0 writes; every rank
    takes part in the gathers). Returns the path on rank 0, None elsewhere."""
    from archcomp.base.version import __version__

    target = Path(path)
    tensors, aliases = _canonical_state(model)
    names = sorted(tensors)
    text = _spec_text(model)
    if _rank() != 0:
        for name in names:
            _full(tensors[name].detach())
        _barrier()
        return None
    floats = [t.dtype for t in tensors.values() if t.is_floating_point()]
    placeholder = "0" * 64
    meta = {
        "format": "pt",
        "archcomp.version": __version__,
        "archcomp.spec": text,
        "archcomp.spec_sha256": spec_hash(text),
        "archcomp.weights_sha256": placeholder,  # patched once the tensors are written
        "archcomp.ties": json.dumps(aliases, sort_keys=True),
        "archcomp.dtype": dtype_name(floats[0]) if floats else "float32",
    }  # the order archcomp.save writes
    head = safetensors_header(tensors, names, meta)
    marker = f'"archcomp.weights_sha256":"{placeholder}"'.encode()
    at = 8 + head.index(marker) + len(marker) - len(placeholder) - 1

    def write(tmp: Path) -> None:
        digest = _WeightsHash()
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(head)) + head)
            for name in names:
                full = _full(tensors[name].detach()).to("cpu").contiguous()
                digest.add(name, full)
                if full.numel():
                    f.write(full.reshape(-1).view(torch.uint8).numpy().data)
                del full  # one full tensor at a time
            f.seek(at)
            f.write(digest.hexdigest().encode())
            f.flush()
            os.fsync(f.fileno())

    try:
        write_atomic(target, write)
    finally:
        _barrier()
    return target


@torch.no_grad()
def load_artifact_sharded(model: nn.Module, path: str | Path) -> nn.Module:
    """Fill a (sharded) ``model`` from an archcomp artifact of its spec, each rank reading only
    its shards' rows from the file."""
    from safetensors import safe_open
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    source = Path(path)
    entries, meta = read_header(source)
    text, _, ties = embedded_metadata(source, meta)  # the same checks as archcomp.load
    if text != _spec_text(model):
        raise ArtifactError(f"{source} holds another spec (or other params) than the model")
    expected, aliases = _canonical_state(model)
    stored = resolve_dtype(meta.get("archcomp.dtype", "float32"))
    _compare(source, entries, expected, aliases, ties, stored)
    try:
        with safe_open(str(source), framework="pt", device="cpu") as f:
            for name in sorted(expected):
                t = expected[name]
                if isinstance(t, DTensor):
                    local = t.to_local()
                    shape, offset = compute_local_shape_and_global_offset(
                        t.shape, t.device_mesh, t.placements
                    )
                    if local.numel() == 0:
                        continue
                    index = tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))
                    local.copy_(f.get_slice(name)[index])
                else:
                    t.copy_(f.get_tensor(name))
    except (OSError, RuntimeError, ValueError, MemoryError) as exc:  # MemoryError: mmap
        raise ArtifactError(f"{source}: cannot read the weights: {exc}") from None
    return model
