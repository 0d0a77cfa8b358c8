"""A free learned tensor (``parameter``): an op with no input, whose result is its weight."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Shape
from archcomp.ops.registry import LowerCtx, OpArgs, OpDef, ShapeCtx, Style, register

Size = Annotated[int, Field(gt=0)]


class ParameterArgs(OpArgs):
    """A learned tensor of the given ``shape`` (positive ints): a class token [1, 1, d], learned
    queries [n, d], a layer-scale gain [d]. Its initializer is the node's ``init`` (default
    N(0, 1), as an embedding). It takes no input; broadcast it to the batch with ``expand``."""

    shape: list[Size] = Field(min_length=1, max_length=8, description="sizes (positive ints)")


def _parameter_shape(ctx: ShapeCtx) -> TensorType:
    return TensorType(tuple(ctx.args.shape), "float32")


def _parameter_params(a: ParameterArgs) -> dict[str, Shape]:
    return {"weight": tuple(a.shape)}


def _parameter_lower(c: LowerCtx) -> Any:
    from archcomp.nn.parameter import LearnedTensor

    return c.module(LearnedTensor(tuple(c.args.shape), **c.factory))()


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
        "layer-scale); no input. Its weight is initialised by the node's init (default N(0, 1)).",
    )
)
