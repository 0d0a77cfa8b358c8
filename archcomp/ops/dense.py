"""Dense layers: linear and embedding."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Shape, mul, prod
from archcomp.ops.common import need_float, need_int
from archcomp.ops.registry import LowerCtx, OpArgs, OpDef, ShapeCtx, Style, register


class LinearArgs(OpArgs):
    """y = x W^T + b over the last dim. ``in_features`` is inferred from the input."""

    out_features: int = Field(gt=0)
    bias: bool = True
    in_features: int | None = Field(default=None, gt=0)
    transposed: bool = Field(
        default=False,
        description="weight stored (in_features, out_features), y = x W + b: GPT-2's Conv1D, "
        "whose checkpoint tensors then load unchanged",
    )


def _linear_shape(ctx: ShapeCtx) -> TensorType:
    x = ctx.x
    need_float(x, what="linear")
    if x.rank < 1:
        ctx.need_rank(x, (1, 2, 3, 4), "x", "linear")
    ctx.infer("in_features", ctx.concrete(x.shape[-1], "the input's last dim (in_features)", "x"))
    return TensorType((*x.shape[:-1], ctx.args.out_features), x.dtype)


def _linear_params(a: LinearArgs) -> dict[str, Shape]:
    p: dict[str, Shape] = {"weight": (a.out_features, a.in_features or 0)}
    if a.transposed:
        p["weight"] = (a.in_features or 0, a.out_features)
    if a.bias:
        p["bias"] = (a.out_features,)
    return p


def _linear_lower(c: LowerCtx) -> Any:
    from archcomp.nn.fast_linear import new_linear
    from archcomp.nn.transposed_linear import TransposedLinear

    a = c.args
    f = c.factory
    if a.transposed:
        return c.module(TransposedLinear(a.in_features, a.out_features, bias=a.bias, **f))(c.x)
    return c.module(new_linear(a.in_features, a.out_features, a.bias, f["device"], f["dtype"]))(c.x)


LINEAR = register(
    OpDef(
        "linear",
        LinearArgs,
        _linear_shape,
        Style("linear", "Linear"),
        params=_linear_params,
        lower=_linear_lower,
        macs=lambda a, ins, outs: mul(prod(outs["out"].shape), a.in_features or 0),
        doc="Fully connected layer on the last dim.",
    )
)


class EmbeddingArgs(OpArgs):
    """A lookup table of ``num_embeddings`` vectors of size ``embedding_dim``."""

    num_embeddings: int = Field(gt=0)
    embedding_dim: int = Field(gt=0)
    padding_idx: int | None = None
    scale: bool = Field(
        default=False, description="multiply by sqrt(embedding_dim), as the Transformer paper does"
    )


def _embedding_shape(ctx: ShapeCtx) -> TensorType:
    x = ctx.x
    need_int(x, what="embedding")
    a = ctx.args
    if a.padding_idx is not None and not -a.num_embeddings <= a.padding_idx < a.num_embeddings:
        from archcomp.ops.registry import ShapeError

        raise ShapeError(
            f"padding_idx {a.padding_idx} is outside [0, {a.num_embeddings})", arg="padding_idx"
        )
    return TensorType((*x.shape, a.embedding_dim), "float32")


def _embedding_lower(c: LowerCtx) -> Any:
    import operator

    import torch
    from torch import nn

    a = c.args
    weight = None
    if c.factory["device"].type == "meta":
        # No values to draw; torch's normal_ on meta imports torch._dynamo (about 1 s).
        weight = torch.empty(a.num_embeddings, a.embedding_dim, **c.factory)
    emb = c.module(
        nn.Embedding(
            a.num_embeddings,
            a.embedding_dim,
            padding_idx=a.padding_idx,
            _weight=weight,
            **c.factory,
        )
    )(c.x)  # (..., embedding_dim)
    return c.call(operator.mul, emb, math.sqrt(a.embedding_dim)) if a.scale else emb


EMBEDDING = register(
    OpDef(
        "embedding",
        EmbeddingArgs,
        _embedding_shape,
        Style("embedding", "Embedding"),
        lower=_embedding_lower,
        params=lambda a: {"weight": (a.num_embeddings, a.embedding_dim)},
        doc="Token embedding: int64 ids (...) -> (..., embedding_dim).",
    )
)
