"""Resampling: upsample (nearest, linear, bilinear, bicubic interpolation). No parameters."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, fmt_shape, mul
from archcomp.ops.common import as_torch_size, need_float
from archcomp.ops.registry import LowerCtx, OpArgs, OpDef, ShapeCtx, ShapeError, Style, register

PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]

# The input ranks each mode takes: (B, C, L) or (B, C, H, W).
_RANKS = {"nearest": (3, 4), "linear": (3,), "bilinear": (4,), "bicubic": (4,)}
_LAYOUT = {3: "(B, C, L)", 4: "(B, C, H, W)"}


class UpsampleArgs(OpArgs):
    """Resize the spatial dims of a (B, C, L) or (B, C, H, W) input by ``scale_factor`` or to
    ``size`` (exactly one). Each output size is ``floor(size * scale_factor)``; on a symbolic
    dim ``scale_factor`` must be a whole number."""

    scale_factor: Union[PosFloat, list[PosFloat]] | None = Field(
        default=None,
        description="multiplier, one number or one per spatial dim (output: "
        "floor(size * factor); whole numbers on symbolic dims); give this or size",
    )
    size: Union[PosInt, list[PosInt]] | None = Field(
        default=None,
        description="output size: one int, or one per spatial dim; give this or scale_factor",
    )
    mode: Literal["nearest", "linear", "bilinear", "bicubic"] = Field(
        default="nearest",
        description="nearest (rank 3 or 4), linear (rank 3), bilinear or bicubic (rank 4)",
    )
    align_corners: bool | None = Field(
        default=None,
        description="align the corner pixels of input and output (interpolating modes only)",
    )


def _per_dim(value: Any, n: int, arg: str) -> list[Any]:
    if not isinstance(value, list):
        return [value] * n
    if len(value) != n:
        raise ShapeError(
            f"{arg} has {len(value)} values, this input has {n} spatial dim{'s' if n > 1 else ''}",
            arg=arg,
            hint=f"give one value, or a list of {n}",
        )
    return value


def _upsample_shape(ctx: ShapeCtx) -> TensorType:
    x, a = ctx.x, ctx.args
    need_float(x, what="upsample")
    ranks = _RANKS[a.mode]
    layout = " or ".join(_LAYOUT[r] for r in ranks)
    if x.rank not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ShapeError(
            f"upsample mode '{a.mode}' expects a rank-{want} input {layout}, "
            f"found {fmt_shape(x.shape)}",
            arg="mode",
            hint="nearest takes rank 3 or 4; linear rank 3; bilinear and bicubic rank 4",
        )
    if a.align_corners is not None and a.mode == "nearest":
        raise ShapeError(
            "align_corners is only for the interpolating modes (linear, bilinear, bicubic)",
            arg="align_corners",
            hint="drop align_corners, or pick an interpolating mode",
        )
    if (a.scale_factor is None) == (a.size is None):
        raise ShapeError(
            "upsample needs exactly one of scale_factor and size",
            arg="size" if a.size is not None else None,
            hint="scale_factor: 2 or size: [64, 64]",
        )
    n = x.rank - 2
    spatial = x.shape[2:]
    if a.size is not None:
        return TensorType((*x.shape[:2], *_per_dim(a.size, n, "size")), x.dtype)
    out: list[Dim] = []
    for i, (d, s) in enumerate(
        zip(spatial, _per_dim(a.scale_factor, n, "scale_factor"), strict=True)
    ):
        if s.is_integer():
            out.append(mul(d, int(s)))
        elif isinstance(d, int):
            length = math.floor(d * s)  # as torch: floor(double(size) * scale)
            if length <= 0:
                raise ShapeError(
                    f"scale_factor {s} leaves no output along dim {2 + i} "
                    f"(floor({d} * {s}) = {length})",
                    arg="scale_factor",
                )
            out.append(length)
        else:
            raise ShapeError(
                f"scale_factor {s} on symbolic dim {2 + i} ('{d}') has no exact size",
                arg="scale_factor",
                hint="use a whole-number scale_factor, give the input a concrete size for this "
                "dim, or give size",
            )
    return TensorType((*x.shape[:2], *out), x.dtype)


def _upsample_lower(c: LowerCtx) -> Any:
    import torch.nn.functional as F

    a = c.args
    kwargs: dict[str, Any] = {}
    if a.size is not None:
        kwargs["size"] = as_torch_size(a.size)
    else:
        s = a.scale_factor
        # a whole factor prints as an int (scale_factor=2); torch treats both alike
        whole = [int(v) if v.is_integer() else v for v in (s if isinstance(s, list) else [s])]
        kwargs["scale_factor"] = tuple(whole) if isinstance(s, list) else whole[0]
    kwargs["mode"] = a.mode
    if a.align_corners is not None:
        kwargs["align_corners"] = a.align_corners
    return c.call(F.interpolate, c.x, **kwargs)


register(
    OpDef(
        "upsample",
        UpsampleArgs,
        _upsample_shape,
        Style("pool", "Upsample"),
        lower=_upsample_lower,
        doc="Resize (B, C, L) or (B, C, H, W) by scale_factor or to size, as "
        "torch.nn.functional.interpolate.",
    )
)
