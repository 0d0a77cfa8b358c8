"""Devices and dtypes: resolution (``auto``), availability errors, memory estimate and refusal.

Nothing here raises a torch traceback at the user: an unavailable device, an unknown dtype or a
model too large for the device is a :class:`UsageError` that says what to do instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archcomp.base.errors import UsageError
from archcomp.base.units import fmt_bytes

if TYPE_CHECKING:
    import torch

    from archcomp.ir import Graph

DTYPES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float64": "float64",
    "fp64": "float64",
    "double": "float64",
}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}

DeviceLike = Any  # str | torch.device | None
DTypeLike = Any  # str | torch.dtype | None


def resolve_dtype(dtype: DTypeLike) -> torch.dtype:
    """``None`` -> float32; names such as ``bf16`` or torch dtypes; floating point only."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise UsageError(f"dtype must be floating point, found {dtype}")
        return dtype
    name = DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise UsageError(
            f"unknown dtype '{dtype}'; choose one of float32, float16, bfloat16, float64"
        )
    return getattr(torch, name)  # type: ignore[no-any-return]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_device(device: DeviceLike) -> torch.device:
    """``None`` -> cpu; ``auto`` -> cuda, else mps, else cpu; unavailable devices are refused."""
    import torch

    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(
            f"unknown device '{device}'; choose cpu, cuda, cuda:N, mps, meta or auto"
        ) from None
    kind = dev.type
    if kind in ("cpu", "meta"):
        return dev
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this torch ({torch.__version__}) was built without CUDA"
                if torch.version.cuda is None
                else "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)"
            )
            raise UsageError(
                f"device '{device}' is not available: {why}; use --device cpu, meta or auto"
            )
        n = torch.cuda.device_count()
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= n:
            raise UsageError(
                f"device '{device}' is not available: {n} CUDA device(s) visible "
                f"(cuda:0 .. cuda:{n - 1})"
            )
        return torch.device("cuda", index)
    if kind == "mps":
        if not _mps_available():
            raise UsageError(
                f"device '{device}' is not available: MPS needs an Apple-silicon Mac and a torch "
                "built with MPS; use --device cpu, meta or auto"
            )
        return dev
    raise UsageError(f"device type '{kind}' is not supported; choose cpu, cuda, mps, meta or auto")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


@dataclass(frozen=True)
class Estimate:
    """What a build costs, from the graph alone (no torch allocation): the bytes it keeps, the
    bytes it needs at its peak (the one node whose construction or initializer needs the most
    temporary memory), and the work of its initializers."""

    params: int  # parameter count, tied and shared weights counted once
    buffers: int  # buffer element count
    param_bytes: int
    buffer_bytes: int
    scratch_bytes: int = 0  # the most any one node allocates beyond its weights while built
    scratch_node: str | None = None
    init_flops: int = 0  # floating-point operations of the initializers (a QR per orthogonal)
    init_what: str | None = None  # the costliest initializer, e.g. "fc.weight (16384x16384)"

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.buffer_bytes

    @property
    def peak_bytes(self) -> int:
        return self.total_bytes + self.scratch_bytes


def estimate(g: Graph, dtype: torch.dtype, *, init: bool = True) -> Estimate:
    """Bytes (kept and at the peak) and initializer work of a build of ``g`` in ``dtype``,
    from the ops' shape, buffer and scratch rules and the planned initializers."""
    size = DTYPE_BYTES.get(dtype_name(dtype), 4)
    params = buffers = 0
    scratch, scratch_node = 0, None
    flops, flops_what, worst = 0, None, 0
    for node in g.nodes.values():
        if node.shared_with is not None:
            continue
        shapes = node.op.param_shapes(node.args)
        for pname, shape in shapes.items():
            if pname in node.tie:
                continue
            params += _numel(shape)
        for bname, shape in node.op.buffer_shapes(node.args).items():
            buffers += _numel(shape)
            work = BUFFER_FLOPS * _numel(shape)  # tables are computed on every build and load
            flops += work
            if work > worst:
                dims = "x".join(str(d) for d in shape)
                worst, flops_what = work, f"the table {node.name}.{bname} ({dims})"
        mine = node.op.scratch_bytes(node.args, size)
        plan = node.meta.get("init", {}) if init else {}
        for pname, call in plan.items():
            found = shapes.get(pname)
            if found is None or pname in node.tie or getattr(call, "name", "") != "orthogonal":
                continue
            shape = found
            rows = shape[0] if shape and isinstance(shape[0], int) else 0
            cols = _numel(shape[1:]) if rows else 0
            work = 2 * rows * cols * min(rows, cols)  # a Householder QR of (rows, cols)
            flops += work
            mine = max(mine, 3 * rows * cols * max(size, 4))  # the matrix, Q and R
            if work > worst:
                worst, flops_what = work, f"{node.name}.{pname} ({rows}x{cols})"
        if mine > scratch:
            scratch, scratch_node = mine, node.name
    return Estimate(
        params, buffers, params * size, buffers * size, scratch, scratch_node, flops, flops_what
    )


def _numel(shape: tuple[Any, ...]) -> int:
    n = 1
    for d in shape:
        n *= d if isinstance(d, int) else 0
    return n


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (None when unknown, e.g. meta)."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
        except (AttributeError, RuntimeError):
            return _host_available()
    if device.type == "cpu":
        return _host_available()
    return None


def _host_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


# What computing one element of a buffer table (a sinusoid or RoPE table, a mask) costs,
# counted as floating-point operations against --max-init-flops: a sinusoid table fills about
# 40 million entries a CPU-second, the time a QR spends on some 500 operations per entry.
BUFFER_FLOPS = 500
MAX_INIT_FLOPS = 10**11  # initializer work a build does unless asked for more (--max-init-flops)
# What each command can do about a model its memory cannot hold: (over the --max-memory
# budget, over the free memory). ``convert`` has no --device: a smaller --dtype is its remedy.
MEMORY_HINTS = {
    "build": (
        "use --device meta to inspect it without allocating",
        "use --device meta to inspect it without allocating, a smaller --dtype, or smaller params",
    ),
    "convert": (
        "convert with a smaller --dtype, or raise --max-memory",
        "convert with a smaller --dtype, or on a machine with more free memory",
    ),
}


def check_fits(
    est: Estimate,
    device: torch.device,
    max_memory: int | None = None,
    max_init_flops: int | None = MAX_INIT_FLOPS,
    *,
    command: str = "build",
) -> None:
    """Refuse a build whose peak would not fit the device's free memory or the ``max_memory``
    budget, or whose initializers would take more than ``max_init_flops`` operations.
    ``command`` (a key of :data:`MEMORY_HINTS`) picks the remedies the messages suggest."""
    over_budget, over_free = MEMORY_HINTS[command]
    if device.type == "meta":
        return
    need = est.peak_bytes
    what = (
        f"about {fmt_bytes(est.total_bytes)} for {est.params:,} parameters and "
        f"{est.buffers:,} buffer elements"
    )
    if est.scratch_bytes:
        where = f", while building '{est.scratch_node}'" if est.scratch_node else ""
        what += f" ({fmt_bytes(need)} at its peak{where})"
    if max_memory is not None and need > max_memory:
        raise UsageError(
            f"the model needs {what}, over the --max-memory budget of "
            f"{fmt_bytes(max_memory)}; {over_budget}"
        )
    if max_init_flops is not None and est.init_flops > max_init_flops:
        raise UsageError(
            f"the initializers need about {est.init_flops:.2g} floating-point operations "
            f"(orthogonal init of {est.init_what} is a QR decomposition, cubic in its size), "
            f"over the limit of {max_init_flops:.2g}: minutes of CPU time; use --device meta, "
            "another initializer, or raise --max-init-flops"
            if not str(est.init_what).startswith("the table")
            else f"the tables need about {est.init_flops:.2g} floating-point operations to "
            f"compute ({est.init_what} is made on every build and load), over the limit of "
            f"{max_init_flops:.2g}: minutes of CPU time; use --device meta, a smaller table, "
            "or raise --max-init-flops"
        )
    free = free_memory(device)
    if free is not None and need > free:
        raise UsageError(
            f"the model needs {what}, but {device} has {fmt_bytes(free)} free; {over_free}"
        )


_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(text: str | int) -> int:
    """``8GB``, ``512MiB``, ``1.5g`` or a plain number of bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise UsageError(f"cannot read '{text}' as a size; write e.g. 8GB, 512MiB or 1000000")
    return int(float(m.group(1)) * _UNITS[unit])
