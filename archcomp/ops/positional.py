"""Positional encodings: sinusoidal and learned, each added to its input (x + PE[:S])."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ops.common import need_float
from archcomp.ops.registry import LowerCtx, OpArgs, OpDef, ShapeCtx, ShapeError, Style, register


class SinusoidalArgs(OpArgs):
    """x [..., S, d] + the paper's fixed sinusoids PE[:S]; S must be at most ``max_len``.

    ``d_model`` is inferred from the input's last dim. No dropout: that is its own op.
    """

    max_len: int = Field(default=5000, gt=0, description="longest sequence the table covers")
    d_model: int | None = Field(default=None, gt=0, description="inferred from the input")


class LearnedArgs(OpArgs):
    """x [..., S, d] + a learned table ``weight`` [max_len, d] at positions 0..S-1.

    GPT-2's ``wpe`` and BERT's position embeddings. ``d_model`` is inferred from the input.
    """

    max_len: int = Field(gt=0, description="number of positions (GPT-2: 1024, BERT: 512)")
    d_model: int | None = Field(default=None, gt=0, description="inferred from the input")


def _posenc_shape(ctx: ShapeCtx) -> TensorType:
    x = ctx.x
    need_float(x, what="a positional encoding")
    if x.rank < 2:
        ctx.need_rank(x, (2, 3), "x", "a positional encoding")
    ctx.infer("d_model", ctx.concrete(x.shape[-1], "the input's last dim (d_model)", "x"))
    length = x.shape[-2]  # S
    if isinstance(length, int) and length > ctx.args.max_len:
        raise ShapeError(
            f"sequence length {length} exceeds max_len {ctx.args.max_len}",
            arg="max_len",
            hint=f"raise max_len to at least {length}",
        )
    return x


def _sinusoidal_lower(c: LowerCtx) -> Any:
    from archcomp.nn.positional import SinusoidalPositionalEncoding

    a: SinusoidalArgs = c.args
    return c.module(SinusoidalPositionalEncoding(a.d_model or 0, a.max_len, **c.factory))(c.x)


def _learned_lower(c: LowerCtx) -> Any:
    from archcomp.nn.positional import LearnedPositionalEncoding

    a: LearnedArgs = c.args
    return c.module(LearnedPositionalEncoding(a.d_model or 0, a.max_len, **c.factory))(c.x)


STYLE = Style("posenc", "Positional Encoding", "circle")

SINUSOIDAL = register(
    OpDef(
        "sinusoidal_positional_encoding",
        SinusoidalArgs,
        _posenc_shape,
        STYLE,
        buffers=lambda a: {"pe": (a.max_len, a.d_model or 0)},  # non-persistent
        lower=_sinusoidal_lower,
        doc="x + fixed sin/cos positional encoding (Transformer); no parameters.",
    )
)

LEARNED = register(
    OpDef(
        "learned_positional_encoding",
        LearnedArgs,
        _posenc_shape,
        STYLE,
        params=lambda a: {"weight": (a.max_len, a.d_model or 0)},
        lower=_learned_lower,
        doc="x + learned position embeddings (GPT-2 wpe, BERT position_embeddings).",
    )
)
