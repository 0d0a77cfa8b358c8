"""Pooling: max/avg pooling (1d, 2d) and adaptive pooling. None has parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim
from archcomp.ops.common import as_torch_size, need_float, ntuple, window_out
from archcomp.ops.registry import LowerCtx, OpArgs, OpDef, ShapeCtx, ShapeError, Style, register

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Sizes = Union[PosInt, list[PosInt]]
Pads = Union[NonNegInt, list[NonNegInt]]

# (C, L) or (B, C, L); (C, H, W) or (B, C, H, W): pooling only touches the trailing dims.
_LAYOUT = {1: "(B, C, L)", 2: "(B, C, H, W)"}
_LAST = {1: "the last dim", 2: "the last 2 dims"}


_KERNEL = "window size: one int, or one per pooled dim"
_STRIDE = "step between windows (default: kernel_size)"
_PADDING = "padding on each side, at most half the kernel"
_CEIL = "round the output size up (no window starts in the right padding)"


class MaxPoolArgs(OpArgs):
    """Max over sliding windows; ``stride`` defaults to ``kernel_size``."""

    kernel_size: Sizes = Field(description=_KERNEL)
    stride: Sizes | None = Field(default=None, description=_STRIDE)
    padding: Pads = Field(default=0, description=_PADDING)
    dilation: Sizes = Field(default=1, description="spacing between window taps")
    ceil_mode: bool = Field(default=False, description=_CEIL)


class AvgPoolArgs(OpArgs):
    """Mean over sliding windows; ``stride`` defaults to ``kernel_size``."""

    kernel_size: Sizes = Field(description=_KERNEL)
    stride: Sizes | None = Field(default=None, description=_STRIDE)
    padding: Pads = Field(default=0, description=_PADDING)
    ceil_mode: bool = Field(default=False, description=_CEIL)
    count_include_pad: bool = Field(default=True, description="padded zeros count in the mean")


class AdaptivePoolArgs(OpArgs):
    """Pool to a fixed output size; a ``null`` entry keeps that dim's input size."""

    output_size: Union[PosInt, list[PosInt | None]] = Field(
        description="one int, or one per pooled dim; null keeps that dim (2-D only)"
    )


def _need_pool_input(ctx: ShapeCtx, n: int, what: str) -> TensorType:
    x = ctx.x
    need_float(x, what=what)
    ctx.need_rank(x, (n + 1, n + 2), "x", f"{what} {_LAYOUT[n]}")
    return x


def _pool_shape(n: int, kind: str) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        a = ctx.args
        x = _need_pool_input(ctx, n, f"{kind}_pool{n}d")
        kernel = ntuple(a.kernel_size, n, "kernel_size")
        stride = kernel if a.stride is None else ntuple(a.stride, n, "stride")
        pad = ntuple(a.padding, n, "padding")
        dilation = ntuple(getattr(a, "dilation", 1), n, "dilation")
        for k, p in zip(kernel, pad, strict=True):
            # torch: padding at most half the kernel size (not the dilated extent)
            half = k // 2
            if p > half:
                raise ShapeError(
                    f"padding {p} is more than half the kernel size {k}",
                    arg="padding",
                    hint=f"use padding <= {half}",
                )
        lead = x.shape[:-n]
        out: list[Dim] = []
        for i in range(n):
            axis = x.rank - n + i
            out.append(
                window_out(
                    x.shape[axis],
                    kernel[i],
                    stride[i],
                    pad[i],
                    dilation[i],
                    ceil_mode=a.ceil_mode,
                    axis=axis,
                )
            )
        return TensorType((*lead, *out), x.dtype)

    return rule


def _pool_lower(n: int, kind: str) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        import torch
        import torch.nn.functional as F

        a = c.args
        kwargs: dict[str, Any] = {"kernel_size": as_torch_size(a.kernel_size)}
        if a.stride is not None:
            kwargs["stride"] = as_torch_size(a.stride)
        if a.padding != 0:
            kwargs["padding"] = as_torch_size(a.padding)
        if kind == "max" and a.dilation != 1:
            kwargs["dilation"] = as_torch_size(a.dilation)
        if a.ceil_mode:
            kwargs["ceil_mode"] = True
        if kind == "avg" and not a.count_include_pad:
            kwargs["count_include_pad"] = False
        # torch.max_pool1d / torch.avg_pool1d / torch.max_pool2d print shortest; F.avg_pool2d
        # is torch's only spelling for 2-D average pooling.
        fn = getattr(torch, f"{kind}_pool{n}d", None) or getattr(F, f"{kind}_pool{n}d")
        return c.call(fn, c.x, **kwargs)

    return lower


_LABELS = {"max": "Max Pool", "avg": "Avg Pool"}

for _n in (1, 2):
    for _kind, _model in (("max", MaxPoolArgs), ("avg", AvgPoolArgs)):
        register(
            OpDef(
                f"{_kind}_pool{_n}d",
                _model,
                _pool_shape(_n, _kind),
                Style("pool", _LABELS[_kind]),
                lower=_pool_lower(_n, _kind),
                doc=f"{_n}-D {_kind} pooling over {_LAST[_n]} of {_LAYOUT[_n]} (or unbatched).",
            )
        )


def _adaptive_shape(n: int, kind: str) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        x = _need_pool_input(ctx, n, f"adaptive_{kind}_pool{n}d")
        size = ctx.args.output_size
        sizes = [size] * n if isinstance(size, int) else list(size)
        if len(sizes) != n:
            raise ShapeError(
                f"output_size has {len(sizes)} values, this op needs {n}",
                arg="output_size",
                hint=f"give one int, or a list of {n}",
            )
        if n == 1 and sizes[0] is None:
            raise ShapeError(
                "output_size null (keep the input size) is only for 2-D pooling",
                arg="output_size",
            )
        keep = x.shape[-n:]
        out = [k if s is None else s for s, k in zip(sizes, keep, strict=True)]
        return TensorType((*x.shape[:-n], *out), x.dtype)

    return rule


def _adaptive_lower(n: int, kind: str) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        import torch.nn.functional as F

        size = c.args.output_size
        fn = getattr(F, f"adaptive_{kind}_pool{n}d")
        return c.call(fn, c.x, size if isinstance(size, int) else tuple(size))

    return lower


for _n in (1, 2):
    for _kind in ("max", "avg"):
        register(
            OpDef(
                f"adaptive_{_kind}_pool{_n}d",
                AdaptivePoolArgs,
                _adaptive_shape(_n, _kind),
                Style("pool", f"Adaptive {_LABELS[_kind]}"),
                lower=_adaptive_lower(_n, _kind),
                doc=f"{_n}-D adaptive {_kind} pooling of {_LAST[_n]} to output_size.",
            )
        )
