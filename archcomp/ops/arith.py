"""Arithmetic on tensors: add, mul."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from archcomp.ir import TensorType
from archcomp.ops.common import broadcast, common_dtype
from archcomp.ops.registry import (
    LowerCtx,
    NoArgs,
    OpDef,
    Port,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)


def _elementwise(ctx: ShapeCtx) -> TensorType:
    xs = ctx.many("x")
    if len(xs) < 2:
        raise ShapeError(
            f"needs at least two inputs, found {len(xs)}", port="x", hint="list them: in: [a, b]"
        )
    ports = ["x"] * len(xs)
    return TensorType(broadcast([t.shape for t in xs], ports), common_dtype(xs, "x"))


def _fold(fn: Callable[[Any, Any], Any]) -> Callable[[LowerCtx], Any]:
    def lower(c: LowerCtx) -> Any:
        xs = list(c.inputs["x"])
        out = xs[0]
        for x in xs[1:]:
            out = c.call(fn, out, x)
        return out

    return lower


register(
    OpDef(
        "add",
        NoArgs,
        _elementwise,
        Style("arith", "+", "circle"),
        inputs=(Port("x", variadic=True),),
        lower=_fold(operator.add),
        doc="Element-wise sum, with broadcasting (a residual connection).",
    )
)
register(
    OpDef(
        "mul",
        NoArgs,
        _elementwise,
        Style("arith", "×", "circle"),
        inputs=(Port("x", variadic=True),),
        lower=_fold(operator.mul),
        doc="Element-wise product, with broadcasting.",
    )
)
