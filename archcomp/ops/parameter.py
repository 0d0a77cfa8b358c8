"""Free tensors and learned gains: ``parameter`` (a free learned tensor, an op with no input
whose result is its weight; ``trainable: false`` freezes it), ``buffer`` (a tensor of the
state that is no parameter: a constant, saved with the weights or not) and ``layer_scale`` (a
learned gain per channel)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Shape, prod
from archcomp.ops.common import need_float, norm_axis
from archcomp.ops.registry import LowerCtx, OpArgs, OpDef, ShapeCtx, ShapeError, Style, register

Size = Annotated[int, Field(gt=0)]


class ParameterArgs(OpArgs):
    """A learned tensor of the given ``shape`` (positive ints; ``[]`` is a scalar): a class token
    [1, 1, d], learned queries [n, d], a layer-scale gain [d], CLIP's ``logit_scale`` []. Its
    initializer is the node's ``init`` (default N(0, 1), as an embedding). ``trainable: false``
    freezes it (``requires_grad`` false): still a parameter of the state dict, counted as
    non-trainable. It takes no input; broadcast it to the batch with ``expand``. ``key: self``
    keys the tensor by the node id itself (``cls_token``, not ``cls_token.weight``): a bare
    ``nn.Parameter`` of a module, as ViT's ``cls_token``, loads by its own name. ``unused: true``
    holds a tensor that no node reads (transformers' DINOv2 ``mask_token`` without
    ``bool_masked_pos``), so the module's whole state dict loads; without it such a node is an
    error (``unused-node``)."""

    shape: list[Size] = Field(max_length=8, description="sizes (positive ints); [] for a scalar")
    trainable: bool = Field(
        default=True, description="false: frozen (requires_grad false), still in the state dict"
    )
    key: Literal["weight", "self"] = Field(
        default="weight",
        description="the state_dict key: <id>.weight, or self: the node id itself",
    )
    unused: bool = Field(
        default=False,
        description="true: no node reads it, kept for the state dict (a tensor no forward reads)",
    )


def _parameter_shape(ctx: ShapeCtx) -> TensorType:
    return TensorType(tuple(ctx.args.shape), "float32")


def _parameter_params(a: ParameterArgs) -> dict[str, Shape]:
    return {"weight" if a.key == "weight" else "": tuple(a.shape)}  # "": keyed by the node id


def _parameter_lower(c: LowerCtx) -> Any:
    from archcomp.nn.parameter import LearnedTensor, learned_tensor

    a: ParameterArgs = c.args
    if a.key == "self":
        return c.tensor(learned_tensor(tuple(a.shape), a.trainable, **c.factory))
    return c.module(LearnedTensor(tuple(a.shape), a.trainable, **c.factory))()


PARAMETER = register(
    OpDef(
        "parameter",
        ParameterArgs,
        _parameter_shape,
        Style("embedding", "Parameter"),
        inputs=(),
        params=_parameter_params,
        lower=_parameter_lower,
        doc="A free learned tensor of a declared shape (class token, learned queries, "
        "layer-scale; [] a scalar); no input. Its weight is initialised by the node's init "
        "(default N(0, 1)); trainable: false freezes it; key: self keys it by the node id.",
    )
)


class BufferArgs(OpArgs):
    """A fixed tensor of the given ``shape`` (``[]``: a scalar), every entry ``init_value``: a
    buffer of the state, not a parameter (DeepSeek-V3's ``e_score_correction_bias``, which is
    updated outside the gradient). ``persistent`` buffers are saved with the weights and loaded
    from checkpoints; others are rebuilt at construction. It takes no input. ``key: self`` keys
    the tensor by the node id itself (``final_logits_bias``, not ``final_logits_bias.value``): a
    module's own buffer, as BART's ``final_logits_bias``, loads by its own name. ``unused:
    true`` holds a buffer no node reads, as ``parameter``'s."""

    shape: list[Size] = Field(max_length=8, description="sizes (positive ints); [] for a scalar")
    init_value: float = Field(default=0.0, description="the value of every entry")
    persistent: bool = Field(
        default=True, description="in the state dict (saved, loaded); false: rebuilt"
    )
    key: Literal["value", "self"] = Field(
        default="value",
        description="the state_dict key: <id>.value, or self: the node id itself",
    )
    unused: bool = Field(
        default=False,
        description="true: no node reads it, kept for the state dict (a tensor no forward reads)",
    )


def _buffer_lower(c: LowerCtx) -> Any:
    from archcomp.nn.parameter import FixedTensor, fixed_tensor

    a: BufferArgs = c.args
    if a.key == "self":
        t = fixed_tensor(tuple(a.shape), a.init_value, **c.factory)
        return c.tensor(t, persistent=a.persistent)
    return c.module(FixedTensor(tuple(a.shape), a.init_value, a.persistent, **c.factory))()


BUFFER = register(
    OpDef(
        "buffer",
        BufferArgs,
        _parameter_shape,
        Style("embedding", "Buffer"),
        inputs=(),
        buffers=lambda a: {"value" if a.key == "value" else "": tuple(a.shape)},  # "": the id
        lower=_buffer_lower,
        doc="A fixed tensor of a declared shape, every entry init_value; a buffer (saved with "
        "the weights when persistent), not a parameter; no input; key: self keys it by the "
        "node id.",
    )
)


class LayerScaleArgs(OpArgs):
    """``x * gamma`` with a learned ``gamma`` per channel along ``dim``; ``num_features`` (the
    channel count) is inferred. ``gain_name`` names the gain in the state dict (DINOv2's
    ``lambda1``: ``<id>.lambda1``)."""

    dim: int = Field(default=-1, description="the channel axis (-1: channels last)")
    init_value: float = Field(
        default=1e-6, description="gamma's initial value (ConvNeXt 1e-6; DINOv2 1.0)"
    )
    num_features: int | None = Field(
        default=None, gt=0, description="inferred: the size of the channel axis"
    )
    gain_name: str = Field(
        default="gamma",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the gain's name in the state dict: <id>.<gain_name>",
    )


# LayerScale's own attributes: no gain may take their name
_TAKEN_NAMES = frozenset(("num_features", "dim", "init_value", "gain_name", "gain", "training"))


def _layer_scale_shape(ctx: ShapeCtx) -> TensorType:
    if ctx.args.gain_name in _TAKEN_NAMES:
        raise ShapeError(
            f"gain_name '{ctx.args.gain_name}' is the name of an attribute of the module",
            arg="gain_name",
            hint="name the gain as the checkpoint does (gamma, lambda1, ...)",
        )
    x = ctx.x
    need_float(x, what="layer_scale")
    axis = norm_axis(ctx.args.dim, x.rank)
    ctx.infer("num_features", ctx.concrete(x.shape[axis], f"the channel dim (dim {axis})", "x"))
    return x


def _layer_scale_lower(c: LowerCtx) -> Any:
    from archcomp.nn.parameter import LayerScale

    a = c.args
    gain = LayerScale(a.num_features, a.dim, a.init_value, a.gain_name, **c.factory)
    return c.module(gain)(c.x)


LAYER_SCALE = register(
    OpDef(
        "layer_scale",
        LayerScaleArgs,
        _layer_scale_shape,
        Style("arith", "Layer Scale"),
        params=lambda a: {a.gain_name: (a.num_features or 0,)},
        macs=lambda a, ins, outs: prod(outs["out"].shape),
        lower=_layer_scale_lower,
        doc="Per-channel learned gain x * gamma (CaiT's LayerScale; ConvNeXt, DINOv2), gamma "
        "initialised to init_value; gain_name renames gamma (DINOv2's lambda1).",
    )
)
