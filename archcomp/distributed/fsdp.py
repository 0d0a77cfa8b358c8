"""FSDP2 on a compiled model: one ``fully_shard`` unit per copy of a repeated block, and the
root for the rest (embeddings, final norm, head; tied weights stay together there).

A model built on ``meta`` is sharded first, then materialised: each rank allocates only its
shards (``to_empty``) and fills them one unit at a time with the values an unsharded build
with the same seed, device and dtype holds (:func:`materialize`), computed node by node by
:func:`archcomp.backends.torch.materialize.node_tensors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from archcomp.backends.torch.artifact import _embedded_graph, embedded_spec, spec_json
from archcomp.backends.torch.checkpointing import fsdp_units
from archcomp.backends.torch.devices import resolve_dtype
from archcomp.backends.torch.materialize import node_tensors
from archcomp.backends.torch.module import get_path, tied_names
from archcomp.base.errors import UsageError
from archcomp.ir import Graph

DEFAULT_SEED = 0  # what a model built without a seed is initialised from on every rank


def require_process_group() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise UsageError(
            "torch.distributed is not initialised: call torch.distributed.init_process_group "
            "first (run the script with torchrun)"
        )


def default_mesh() -> DeviceMesh:
    """A 1-D mesh over every rank, on the device type of the process group's backend."""
    require_process_group()
    backend = str(dist.get_backend()).lower()
    kind = "cuda" if "nccl" in backend or "cuda" in backend else "cpu"
    return init_device_mesh(kind, (dist.get_world_size(),))


def rank_device(mesh: DeviceMesh) -> torch.device:
    """The device this rank computes on: its current accelerator, or the CPU."""
    if mesh.device_type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(mesh.device_type)


def _mp_policy(mixed_precision: Any) -> MixedPrecisionPolicy:
    if mixed_precision is None:
        return MixedPrecisionPolicy()
    if isinstance(mixed_precision, MixedPrecisionPolicy):
        return mixed_precision
    # a dtype (or its name): compute in it, reduce gradients in float32
    return MixedPrecisionPolicy(
        param_dtype=resolve_dtype(mixed_precision), reduce_dtype=torch.float32
    )


def shard(
    model: nn.Module,
    mesh: DeviceMesh | None = None,
    *,
    reshard_after_forward: bool = True,
    mixed_precision: Any = None,
    seed: int | None = None,
) -> nn.Module:
    """Shard ``model`` with FSDP2 (``torch.distributed.fsdp.fully_shard``) over ``mesh`` (default:
    every rank, on the process group's device type) and return it.

    Each copy of a repeated block is one FSDP unit, the root the last (:func:`fsdp_units`);
    tied weights stay one parameter. A model on ``meta`` (``archcomp.build(spec,
    device="meta")``) is then materialised on each rank's device, each rank allocating only
    its shards, with exactly the values of an unsharded build with ``seed`` (default: the seed
    the model was built with, else 0) on that device type and dtype; buffers (sinusoid tables,
    rotary tables) are computed too. A model already on a real device is sharded as it is.
    ``mixed_precision``: a ``MixedPrecisionPolicy``, or a dtype (``"bf16"``) to compute in with
    float32 gradient reduction.
    """
    require_process_group()
    mesh = mesh if mesh is not None else default_mesh()
    tensors = [*model.parameters(), *model.buffers()]
    on_meta = any(t.device.type == "meta" for t in tensors)
    if on_meta and not all(t.device.type == "meta" for t in tensors):
        raise UsageError("the model is partly on meta: build it on meta or on a real device")
    scalars = [name for name, p in model.named_parameters() if p.dim() == 0]
    if scalars:  # fully_shard shards dim 0 and refuses them with a ValueError
        raise UsageError(
            f"FSDP2 cannot shard a scalar parameter ({', '.join(scalars[:5])}): give it shape "
            "[1], or train the model with DDP"
        )
    kw: dict[str, Any] = {
        "mesh": mesh,
        "reshard_after_forward": reshard_after_forward,
        "mp_policy": _mp_policy(mixed_precision),
    }
    for path in fsdp_units(model):
        fully_shard(get_path(model, path), **kw)
    fully_shard(model, **kw)
    if on_meta:
        model.to_empty(device=rank_device(mesh))
        materialize(model, seed=seed)
    return model


def model_graph(model: nn.Module) -> Graph:
    """The checked graph of a compiled model, rebuilt from the spec it carries."""
    spec = embedded_spec(model)
    return _embedded_graph(Path(f"<{getattr(model, 'name', 'model')}>"), spec, spec_json(spec))


@torch.no_grad()
def materialize(model: nn.Module, *, seed: int | None = None) -> None:
    """Fill every parameter and buffer of ``model`` (sharded or not, already allocated) with
    the values an unsharded build with ``seed`` gives them, one FSDP unit at a time (each
    rank computes a unit's full tensors and keeps its shards)."""
    if seed is None:
        seed = getattr(model, "build_seed", None)
    if seed is None:
        seed = DEFAULT_SEED
    g = model_graph(model)
    meta = getattr(model, "node_meta", {})
    units = fsdp_units(model)
    groups: dict[str, list[str]] = {u: [] for u in [*units, ""]}
    for node in g.nodes.values():
        path = meta.get(node.name, {}).get("module")
        if path is None or node.shared_with is not None:
            continue
        unit = next((u for u in units if path == u or path.startswith(u + ".")), "")
        groups[unit].append(node.name)
    first = next((t for t in model.parameters() if t.is_floating_point()), None)
    dtype = first.dtype if first is not None else torch.float32
    device = _device_of(model)
    filled: set[str] = set()
    for names in groups.values():
        for key, full in node_tensors(g, names, device, dtype, seed).items():
            target = get_path(model, key)
            _copy_into(target, full)
            filled.add(key)
    ties = tied_names(model)
    filled |= {ties[k] for k in filled if k in ties}
    state = {k for k, _ in model.named_parameters()} | {k for k, _ in model.named_buffers()}
    missing = sorted(state - filled - set(ties))
    if missing:
        raise RuntimeError(f"materialize: no values computed for {', '.join(missing[:5])}")


def _device_of(model: nn.Module) -> torch.device:
    for t in [*model.parameters(), *model.buffers()]:
        if isinstance(t, DTensor):
            return t.to_local().device
        return t.device
    return torch.device("cpu")


def _copy_into(target: torch.Tensor, full: torch.Tensor) -> None:
    """Copy the full tensor ``full`` into ``target``: into its local shard when a DTensor."""
    if isinstance(target, DTensor):
        local = distribute_tensor(
            full.to(target.to_local().device, target.dtype),
            target.device_mesh,
            target.placements,
            src_data_rank=None,  # every rank holds the full value: no communication
        ).to_local()
        target.to_local().copy_(local)
    else:
        target.copy_(full)
