"""Convolutions: conv1d, conv2d, and transposed convolutions conv_transpose1d/2d."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Shape, add, mul, prod, sub
from archcomp.ops.common import as_torch_size, need_float, ntuple, window_out
from archcomp.ops.registry import (
    LowerCtx,
    MacRule,
    OpArgs,
    OpDef,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)

_LAYOUT = {1: "(B, C, L)", 2: "(B, C, H, W)"}

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
# One int for every spatial dim, or one per spatial dim.
Sizes = Union[PosInt, list[PosInt]]
Padding = Union[NonNegInt, list[NonNegInt], Literal["same", "valid"]]


class ConvArgs(OpArgs):
    """A convolution over the trailing spatial dims of a (B, C, ...) input.

    ``in_channels`` is inferred from dim 1. ``padding`` is an int, one int per spatial dim,
    ``same`` (output as long as the input; stride 1 only) or ``valid`` (no padding).
    """

    out_channels: int = Field(gt=0, description="channels of the output")
    kernel_size: Sizes = Field(description="window size: one int, or one per spatial dim")
    stride: Sizes = Field(default=1, description="step between windows")
    padding: Padding = Field(
        default=0,
        description="zeros added on each side: an int, one per spatial dim, "
        "'same' (stride 1 only) or 'valid' (none)",
    )
    dilation: Sizes = Field(default=1, description="spacing between kernel taps")
    groups: int = Field(
        default=1, gt=0, description="channel groups; must divide in and out channels"
    )
    bias: bool = Field(default=True, description="add a learned bias")
    padding_mode: Literal["zeros"] = Field(default="zeros", description="only zeros")
    in_channels: int | None = Field(
        default=None, gt=0, description="inferred from the input's dim 1"
    )


def _channels(ctx: ShapeCtx, what: str, n: int) -> int:
    """Checks every convolution shares (a float (B, C, ...) input, groups dividing both channel
    counts) and infers in_channels from dim 1."""
    x, a = ctx.x, ctx.args
    need_float(x, what=what)
    ctx.need_rank(x, (n + 2,), "x", f"{what} {_LAYOUT[n]}")
    cin = ctx.infer("in_channels", ctx.concrete(x.shape[1], "the channel dim (dim 1)", "x"))
    if cin % a.groups or a.out_channels % a.groups:
        raise ShapeError(
            f"groups={a.groups} must divide in_channels ({cin}) and "
            f"out_channels ({a.out_channels})",
            arg="groups",
        )
    return cin


def _conv_shape(n: int) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        x, a = ctx.x, ctx.args
        _channels(ctx, f"conv{n}d", n)
        kernel = ntuple(a.kernel_size, n, "kernel_size")
        stride = ntuple(a.stride, n, "stride")
        dilation = ntuple(a.dilation, n, "dilation")
        spatial = x.shape[2:]
        out: list[Dim] = []
        if a.padding == "same":
            if any(s != 1 for s in stride):
                raise ShapeError(
                    "padding 'same' needs stride 1 (torch does not support it for strided convs)",
                    arg="padding",
                    hint="give the padding as an int",
                )
            out = list(spatial)
        else:
            pad = ntuple(0 if a.padding == "valid" else a.padding, n, "padding")
            for i in range(n):
                out.append(
                    window_out(spatial[i], kernel[i], stride[i], pad[i], dilation[i], axis=2 + i)
                )
        return TensorType((x.shape[0], a.out_channels, *out), x.dtype)

    return rule


def _conv_params(n: int) -> Callable[[ConvArgs], dict[str, Shape]]:
    def params(a: ConvArgs) -> dict[str, Shape]:
        cin = (a.in_channels or 0) // a.groups
        p: dict[str, Shape] = {"weight": (a.out_channels, cin, *ntuple(a.kernel_size, n, ""))}
        if a.bias:
            p["bias"] = (a.out_channels,)
        return p

    return params


def _conv_macs(n: int) -> MacRule:
    def macs(a: ConvArgs, ins: Any, outs: dict[str, TensorType]) -> Dim:
        # each output element: (in_channels / groups) * prod(kernel_size) multiply-adds
        taps = prod(ntuple(a.kernel_size, n, ""))
        return mul(prod(outs["out"].shape), mul((a.in_channels or 0) // a.groups, taps))

    return macs


def _conv_lower(n: int) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        from torch import nn

        a = c.args
        cls: Any = nn.Conv1d if n == 1 else nn.Conv2d
        padding = a.padding if isinstance(a.padding, str) else as_torch_size(a.padding)
        conv = cls(
            a.in_channels,
            a.out_channels,
            as_torch_size(a.kernel_size),
            stride=as_torch_size(a.stride),
            padding=padding,
            dilation=as_torch_size(a.dilation),
            groups=a.groups,
            bias=a.bias,
            **c.factory,
        )
        return c.module(conv)(c.x)

    return lower


for _n in (1, 2):
    register(
        OpDef(
            f"conv{_n}d",
            ConvArgs,
            _conv_shape(_n),
            Style("conv", "Conv"),
            params=_conv_params(_n),
            macs=_conv_macs(_n),
            lower=_conv_lower(_n),
            doc=f"{_n}-D convolution: {_LAYOUT[_n]} -> (B, out_channels, ...).",
        )
    )


# --- transposed convolutions ---------------------------------------------------------------

Pads = Union[NonNegInt, list[NonNegInt]]


class ConvTransposeArgs(OpArgs):
    """A transposed convolution (the gradient of a conv: upsamples by ``stride``) over the
    trailing spatial dims of a (B, C, ...) input. ``in_channels`` is inferred from dim 1.

    Output length per spatial dim, as torch: ``(L - 1)*stride - 2*padding +
    dilation*(kernel_size - 1) + output_padding + 1``.
    """

    out_channels: int = Field(gt=0, description="channels of the output")
    kernel_size: Sizes = Field(description="window size: one int, or one per spatial dim")
    stride: Sizes = Field(default=1, description="upsampling step: one int, or one per spatial dim")
    padding: Pads = Field(
        default=0, description="size removed from each side of the output (as torch)"
    )
    output_padding: Pads = Field(
        default=0,
        description="extra size added on one side of the output; below stride or dilation",
    )
    dilation: Sizes = Field(default=1, description="spacing between kernel taps")
    groups: int = Field(
        default=1, gt=0, description="channel groups; must divide in and out channels"
    )
    bias: bool = Field(default=True, description="add a learned bias")
    in_channels: int | None = Field(
        default=None, gt=0, description="inferred from the input's dim 1"
    )


def _conv_transpose_shape(n: int) -> Callable[[ShapeCtx], TensorType]:
    def rule(ctx: ShapeCtx) -> TensorType:
        x, a = ctx.x, ctx.args
        _channels(ctx, f"conv_transpose{n}d", n)
        kernel = ntuple(a.kernel_size, n, "kernel_size")
        stride = ntuple(a.stride, n, "stride")
        pad = ntuple(a.padding, n, "padding")
        out_pad = ntuple(a.output_padding, n, "output_padding")
        dilation = ntuple(a.dilation, n, "dilation")
        out: list[Dim] = []
        for i in range(n):
            if out_pad[i] >= stride[i] and out_pad[i] >= dilation[i]:
                raise ShapeError(
                    f"output_padding {out_pad[i]} must be smaller than stride ({stride[i]}) "
                    f"or dilation ({dilation[i]}) along dim {2 + i}",
                    arg="output_padding",
                    hint="output_padding picks one of the stride's possible output sizes",
                )
            size = x.shape[2 + i]
            # (L - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1
            grow = dilation[i] * (kernel[i] - 1) + out_pad[i] + 1 - 2 * pad[i]
            length = add(mul(sub(size, 1), stride[i]), grow)
            if isinstance(length, int) and length <= 0:
                raise ShapeError(
                    f"padding {pad[i]} leaves no output along dim {2 + i} "
                    f"(size {size} gives {length})",
                    arg="padding",
                    hint="use less padding, a larger kernel or stride, or a larger input",
                )
            out.append(length)
        return TensorType((x.shape[0], a.out_channels, *out), x.dtype)

    return rule


def _conv_transpose_params(n: int) -> Callable[[ConvTransposeArgs], dict[str, Shape]]:
    def params(a: ConvTransposeArgs) -> dict[str, Shape]:
        # torch keeps the weight as (in_channels, out_channels / groups, *kernel_size)
        kernel = ntuple(a.kernel_size, n, "")
        p: dict[str, Shape] = {"weight": (a.in_channels or 0, a.out_channels // a.groups, *kernel)}
        if a.bias:
            p["bias"] = (a.out_channels,)
        return p

    return params


def _conv_transpose_macs(n: int) -> MacRule:
    def macs(a: ConvTransposeArgs, ins: Any, outs: dict[str, TensorType]) -> Dim:
        # each input element is scattered through (out_channels / groups) * prod(kernel_size)
        # multiply-adds
        taps = prod(ntuple(a.kernel_size, n, ""))
        return mul(prod(ins["x"].shape), mul(a.out_channels // a.groups, taps))

    return macs


def _conv_transpose_lower(n: int) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        from torch import nn

        a = c.args
        cls: Any = nn.ConvTranspose1d if n == 1 else nn.ConvTranspose2d
        conv = cls(
            a.in_channels,
            a.out_channels,
            as_torch_size(a.kernel_size),
            stride=as_torch_size(a.stride),
            padding=as_torch_size(a.padding),
            output_padding=as_torch_size(a.output_padding),
            groups=a.groups,
            bias=a.bias,
            dilation=as_torch_size(a.dilation),
            **c.factory,
        )
        return c.module(conv)(c.x)

    return lower


for _n in (1, 2):
    register(
        OpDef(
            f"conv_transpose{_n}d",
            ConvTransposeArgs,
            _conv_transpose_shape(_n),
            Style("conv", "Transposed Conv"),
            params=_conv_transpose_params(_n),
            macs=_conv_transpose_macs(_n),
            lower=_conv_transpose_lower(_n),
            doc=f"{_n}-D transposed convolution (upsampling): {_LAYOUT[_n]} -> "
            "(B, out_channels, ...).",
        )
    )
