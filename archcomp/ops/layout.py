"""Moving elements without arithmetic on them: roll (a cyclic shift, Swin's shifted windows)
and pad (a border of constants or copied edges, F.pad). Both keep the input's dtype.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, add, fmt_shape
from archcomp.ops.common import Number, need_fits, norm_axis
from archcomp.ops.registry import (
    LowerCtx,
    OpArgs,
    OpDef,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)

# --- roll ------------------------------------------------------------------------------------


class RollArgs(OpArgs):
    """Shift elements cyclically along ``dims`` by ``shifts`` (one per dim): what leaves one end
    comes back at the other. ``{shifts: [-3, -3], dims: [1, 2]}`` is Swin's window shift."""

    shifts: int | Annotated[list[int], Field(min_length=1)] = Field(
        description="the shift, or one per dim of dims"
    )
    dims: int | Annotated[list[int], Field(min_length=1)] = Field(
        description="the dim to roll, or a list"
    )


def _roll_shape(ctx: ShapeCtx) -> TensorType:
    x, a = ctx.x, ctx.args
    shifts = a.shifts if isinstance(a.shifts, list) else [a.shifts]
    dims = a.dims if isinstance(a.dims, list) else [a.dims]
    if len(shifts) != len(dims):
        raise ShapeError(
            f"shifts has {len(shifts)} values for {len(dims)} dims",
            arg="shifts",
            hint="one shift per dim",
        )
    axes = [norm_axis(d, x.rank, "dims") for d in dims]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"dims {dims} names a dim twice", arg="dims")
    return x


def _roll_lower(c: LowerCtx) -> Any:
    import torch

    a = c.args
    shifts = tuple(a.shifts) if isinstance(a.shifts, list) else a.shifts
    dims = tuple(a.dims) if isinstance(a.dims, list) else a.dims
    return c.call(torch.roll, c.x, shifts, dims)


register(
    OpDef(
        "roll",
        RollArgs,
        _roll_shape,
        Style("shape", "Roll", plumbing=True),
        lower=_roll_lower,
        doc="Cyclic shift along dims (torch.roll): Swin's shifted windows and their way back.",
    )
)

# --- pad -------------------------------------------------------------------------------------

PadMode = Literal["constant", "reflect", "replicate", "circular"]


class PadArgs(OpArgs):
    """Pad the last dims as F.pad does: ``pad`` is (left, right) of the last dim, then of the one
    before, ...; negative values crop. ``mode`` constant fills ``value``; reflect, replicate and
    circular copy the edges and pad at most the last 3 dims of a batched input."""

    pad: list[int] = Field(
        min_length=2, max_length=16, description="before and after, from the last dim backwards"
    )
    mode: PadMode = Field(default="constant", description="constant, reflect, replicate, circular")
    value: Number = Field(default=0, description="the fill of mode constant")


def _pad_dim(d: Dim, before: int, after: int, axis: int, mode: str) -> Dim:
    if mode == "reflect" and isinstance(d, int) and max(before, after) >= d:
        raise ShapeError(
            f"reflect padding of {max(before, after)} needs dim {axis} larger than that, found {d}",
            arg="pad",
            hint="pad less, or use mode replicate",
        )
    if mode == "circular" and isinstance(d, int) and max(before, after) > d:
        raise ShapeError(
            f"circular padding of {max(before, after)} is more than dim {axis} ({d})", arg="pad"
        )
    out = add(add(d, before), after)
    if isinstance(out, int) and out <= 0:
        raise ShapeError(f"pad crops dim {axis} (size {d}) to {out}", arg="pad")
    return out


def _pad_shape(ctx: ShapeCtx) -> TensorType:
    x, a = ctx.x, ctx.args
    if len(a.pad) % 2:
        raise ShapeError(
            f"pad has {len(a.pad)} values; it takes pairs (before, after)",
            arg="pad",
            hint="[1, 1] pads the last dim by 1 on each side",
        )
    n = len(a.pad) // 2
    if n > x.rank:
        raise ShapeError(f"pad has {n} pairs for a rank-{x.rank} input", arg="pad")
    if a.mode != "constant":
        if a.mode in ("reflect", "replicate") and x.dtype == "bool":
            raise ShapeError(
                f"{a.mode} padding does not take a bool tensor (torch refuses it)",
                arg="mode",
                hint="pad a mask with mode constant (value 0 or 1), or circular",
            )
        if a.value != 0:
            raise ShapeError(f"value is only for mode constant, not {a.mode}", arg="value")
        if n > 3 or x.rank not in (n + 1, n + 2):
            raise ShapeError(
                f"{a.mode} padding of {n} dims needs a rank-{n + 1} or rank-{n + 2} input, found "
                f"{fmt_shape(x.shape)}",
                arg="mode",
                hint="torch pads the last 1-3 dims of a (batch, channels, ...) input this way",
            )
    need_fits(a.value, x.dtype, "value", "pad")
    shape = list(x.shape)
    for i in range(n):
        axis = x.rank - 1 - i
        shape[axis] = _pad_dim(shape[axis], a.pad[2 * i], a.pad[2 * i + 1], axis, a.mode)
    return TensorType(tuple(shape), x.dtype)


def _pad_lower(c: LowerCtx) -> Any:
    from torch.nn import functional

    a = c.args
    extra: dict[str, Any] = {}
    if a.mode != "constant":
        extra["mode"] = a.mode
    elif a.value != 0:
        extra["value"] = a.value
    return c.call(functional.pad, c.x, tuple(a.pad), **extra)


register(
    OpDef(
        "pad",
        PadArgs,
        _pad_shape,
        Style("shape", "Pad", plumbing=True),
        lower=_pad_lower,
        doc="Pad (or crop, with negative values) the last dims (F.pad): a constant, or the edges "
        "reflected, replicated or wrapped. Swin pads to a multiple of its window.",
    )
)
