"""Positional encodings: sinusoidal and learned, each added to its input (x + PE[:S]); rotary
position embeddings (RoPE), which rotate query and key heads instead."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Shape, fmt_shape
from archcomp.ops.common import need_float
from archcomp.ops.registry import LowerCtx, OpArgs, OpDef, ShapeCtx, ShapeError, Style, register


class SinusoidalArgs(OpArgs):
    """x [..., S, d] + fixed sinusoids PE[:S]; S must be at most ``max_len``.

    ``layout: interleaved`` is the Transformer paper's: PE(p, 2i) = sin(p / 10000^(2i/d)),
    PE(p, 2i+1) = cos(same). ``layout: concat`` is tensor2tensor's and Whisper's: the d/2
    sines, then the d/2 cosines, of p * exp(-i * log(10000) / (d/2 - 1)) (d even, at least 4).
    ``d_model`` is inferred from the input's last dim. No dropout: that is its own op.
    """

    max_len: int = Field(default=5000, gt=0, description="longest sequence the table covers")
    layout: Literal["interleaved", "concat"] = Field(
        default="interleaved",
        description="interleaved: sin/cos alternate (Transformer paper); concat: [sin..., "
        "cos...] with timescales log(10000) / (d/2 - 1) apart (Whisper, tensor2tensor)",
    )
    d_model: int | None = Field(default=None, gt=0, description="inferred from the input")


class LearnedArgs(OpArgs):
    """x [..., S, d] + a learned table ``weight`` [offset + max_len, d] at rows
    offset..offset+S-1.

    GPT-2's ``wpe`` and BERT's position embeddings (offset 0); BART's
    ``embed_positions`` (offset 2: two rows no position uses). ``d_model`` is inferred.
    """

    max_len: int = Field(gt=0, description="number of positions (GPT-2: 1024, BERT: 512)")
    offset: int = Field(
        default=0,
        ge=0,
        description="rows before position 0 (BART: 2); the table has max_len + offset rows",
    )
    d_model: int | None = Field(default=None, gt=0, description="inferred from the input")


def _posenc_shape(ctx: ShapeCtx) -> TensorType:
    x = ctx.x
    need_float(x, what="a positional encoding")
    if x.rank < 2:
        ctx.need_rank(x, (2, 3), "x", "a positional encoding")
    d = ctx.infer("d_model", ctx.concrete(x.shape[-1], "the input's last dim (d_model)", "x"))
    if getattr(ctx.args, "layout", None) == "concat" and (d % 2 or d < 4):
        raise ShapeError(
            f"the concat layout needs an even d_model of at least 4, found {d}",
            arg="layout",
            hint="use layout: interleaved, or an even width",
        )
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
    pe = SinusoidalPositionalEncoding(a.d_model or 0, a.max_len, a.layout, **c.factory)
    return c.module(pe)(c.x)


def _learned_lower(c: LowerCtx) -> Any:
    from archcomp.nn.positional import LearnedPositionalEncoding

    a: LearnedArgs = c.args
    pe = LearnedPositionalEncoding(a.d_model or 0, a.max_len, a.offset, **c.factory)
    return c.module(pe)(c.x)


STYLE = Style("posenc", "Positional Encoding", "circle")
SINUSOID_CHUNK = 1 << 20  # = archcomp.nn.positional.CHUNK (nn imports torch; this must not)

SINUSOIDAL = register(
    OpDef(
        "sinusoidal_positional_encoding",
        SinusoidalArgs,
        _posenc_shape,
        replace(STYLE, glyph="∿"),  # the paper's sine wave
        buffers=lambda a: {"pe": (a.max_len, a.d_model or 0)},  # non-persistent
        # float32 temporaries of one chunk (archcomp.nn.positional.CHUNK entries): the
        # angles, their sines and cosines, and the positions
        scratch=lambda a, size: 4 * 4 * min(SINUSOID_CHUNK, a.max_len * (a.d_model or 0)),
        lower=_sinusoidal_lower,
        doc="x + fixed sin/cos positional encoding (Transformer: interleaved; Whisper, "
        "tensor2tensor: concat); no parameters.",
    )
)

LEARNED = register(
    OpDef(
        "learned_positional_encoding",
        LearnedArgs,
        _posenc_shape,
        STYLE,
        params=lambda a: {"weight": (a.max_len + a.offset, a.d_model or 0)},
        lower=_learned_lower,
        doc="x + learned position embeddings (GPT-2 wpe, BERT position_embeddings; BART's "
        "with offset 2).",
    )
)


# -- rotary_embedding ------------------------------------------------------------------------


class RopeScalingArgs(OpArgs):
    """Frequency scaling for long contexts, as transformers' ``rope_parameters`` (its
    ``rope_type`` is ``type``, its ``original_max_position_embeddings`` ``original_max_len``):

    - ``default``: the plain frequencies, as no ``scaling`` (a spec that picks the type by a
      param: ``type: "${rope_type}"``, the other fields ``null`` where it reads none);
    - ``llama3`` (Llama 3.1): wavelengths above ``original_max_len / low_freq_factor`` slowed by
      ``factor``, those below ``original_max_len / high_freq_factor`` kept, the band between
      interpolated (defaults: factor 8, original_max_len 8192);
    - ``linear``: every frequency divided by ``factor`` (position interpolation);
    - ``dynamic``: NTK-aware base, recomputed in the forward for a sequence longer than
      ``original_max_len`` (transformers' ``max_position_embeddings``);
    - ``yarn``: a ramp between scaled and unscaled frequencies (``beta_fast``, ``beta_slow``),
      cos and sin times ``attention_factor`` (default from ``factor``, ``mscale``,
      ``mscale_all_dim``);
    - ``longrope`` (Phi-3): per-dim ``short_factor``, or ``long_factor`` for a sequence longer
      than ``original_max_len``; ``factor`` defaults to max_len / original_max_len.
    """

    type: Literal["default", "llama3", "linear", "dynamic", "yarn", "longrope"] = Field(
        description="the scaling rule (transformers' rope_type)"
    )
    factor: float | None = Field(
        default=None, gt=0, description="context extension factor (llama3: 8 if not given)"
    )
    original_max_len: int | None = Field(
        default=None, gt=0, description="context length the model was trained at (llama3: 8192)"
    )
    low_freq_factor: float = Field(default=1.0, gt=0, description="llama3: start of the band")
    high_freq_factor: float = Field(default=4.0, gt=0, description="llama3: end of the band")
    beta_fast: float = Field(default=32.0, gt=0, description="yarn: rotations ending the ramp")
    beta_slow: float = Field(default=1.0, gt=0, description="yarn: rotations starting the ramp")
    mscale: float | None = Field(
        default=None, description="yarn: DeepSeek's mscale (with mscale_all_dim)"
    )
    mscale_all_dim: float | None = Field(
        default=None,
        description="yarn: attention_factor = m(factor, mscale) / m(factor, mscale_all_dim), "
        "m(s, k) = 0.1 k ln(s) + 1",
    )
    truncate: bool = Field(default=True, description="yarn: round the ramp's ends to dims")
    attention_factor: float | None = Field(
        default=None, gt=0, description="yarn, longrope: the factor on cos and sin"
    )
    short_factor: list[float] | None = Field(
        default=None, description="longrope: a divisor per frequency (rotary_dim / 2 of them)"
    )
    long_factor: list[float] | None = Field(
        default=None, description="longrope: the divisors past original_max_len"
    )


# the arguments each scaling type reads, and those it needs
SCALING_ARGS: dict[str, tuple[set[str], set[str]]] = {
    "default": (set(), set()),
    "llama3": ({"factor", "original_max_len", "low_freq_factor", "high_freq_factor"}, set()),
    "linear": ({"factor"}, {"factor"}),
    "dynamic": ({"factor", "original_max_len"}, {"factor", "original_max_len"}),
    "yarn": (
        {"factor", "original_max_len", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"}
        | {"truncate", "attention_factor"},
        {"factor", "original_max_len"},
    ),
    "longrope": (
        {"factor", "original_max_len", "attention_factor", "short_factor", "long_factor"},
        {"original_max_len", "short_factor", "long_factor"},
    ),
}


class RotaryArgs(OpArgs):
    """Rotary position embedding: position t rotates each pair of a head's dims by the angle
    ``t * theta^(-2i/r)`` (r = ``rotary_dim``); dims past ``rotary_dim`` pass through."""

    theta: float = Field(
        default=10000.0, gt=0, description="frequency base (Llama 2: 10000, Llama 3: 500000)"
    )
    rotary_dim: int | None = Field(
        default=None, gt=0, description="head dims that rotate (even; default: all of them)"
    )
    interleaved: bool = Field(
        default=False,
        description="pair dim 2i with 2i+1 (GPT-J, Meta's checkpoints); false: dim i with "
        "i + r/2 (rotate-half: transformers' Llama, GPT-NeoX)",
    )
    max_len: int = Field(
        default=4096, gt=0, description="longest sequence the cos/sin tables cover"
    )
    scaling: RopeScalingArgs | None = Field(
        default=None,
        description="frequency scaling for long contexts: {type: default | llama3 | linear | "
        "dynamic | yarn | longrope, ...} (see rotary_embedding)",
    )


class RotaryEmbeddingArgs(RotaryArgs):
    """RoPE on x [..., T, d] (heads before T, as scaled_dot_product_attention takes them) at
    positions 0..T-1; ``head_dim`` (d) is inferred. The cos/sin tables are non-persistent
    buffers of shape [max_len, rotary_dim / 2], computed by the module."""

    head_dim: int | None = Field(default=None, gt=0, description="inferred from the input")


def rotary_width(rope: RotaryArgs, head_dim: int, arg: str, scaling_arg: str) -> int:
    """The rotated width r, checked against the head; a ShapeError names ``arg`` (or
    ``scaling_arg`` for the scaling's factors)."""
    r = head_dim if rope.rotary_dim is None else rope.rotary_dim
    if r % 2 or r > head_dim:
        raise ShapeError(
            f"the head dim {head_dim} is odd: RoPE rotates pairs of dims"
            if rope.rotary_dim is None
            else f"rotary_dim {r} must be even and at most the head dim {head_dim}",
            arg=arg,
            hint="give an even rotary_dim of at most the head dim",
        )
    if rope.scaling is not None:
        check_scaling(rope.scaling, r, scaling_arg)
    return r


def check_scaling(s: RopeScalingArgs, r: int, arg: str) -> None:
    """The scaling's arguments fit its type and the rotated width ``r``."""
    reads, needs = SCALING_ARGS[s.type]
    given = s.model_fields_set - {"type"}
    if given - reads:
        raise ShapeError(
            f"scaling type '{s.type}' takes no {', '.join(sorted(given - reads))}",
            arg=arg,
            hint=f"it reads {', '.join(sorted(reads))}",
        )
    if needs - given:
        raise ShapeError(
            f"scaling type '{s.type}' needs {', '.join(sorted(needs - given))}",
            arg=arg,
            hint=f"{s.type} needs {', '.join(sorted(needs))}",
        )
    if s.type == "llama3" and s.high_freq_factor <= s.low_freq_factor:
        raise ShapeError(
            f"scaling's high_freq_factor {s.high_freq_factor} must exceed its "
            f"low_freq_factor {s.low_freq_factor}",
            arg=arg,
        )
    if s.type == "dynamic" and r <= 2:
        raise ShapeError(f"dynamic scaling needs a rotary width above 2, found {r}", arg=arg)
    for name in ("short_factor", "long_factor"):
        n = len(getattr(s, name) or [])
        if s.type == "longrope" and n != r // 2:
            raise ShapeError(
                f"scaling's {name} has {n} entries; the rotary width {r} needs {r // 2}",
                arg=arg,
                hint="one divisor per rotated pair of dims",
            )


def check_rope_lengths(rope: RotaryArgs, lengths: Iterable[tuple[Dim, str]], arg: str) -> None:
    """Concrete sequence lengths must fit the tables (symbolic ones are checked at run time)."""
    for length, port in lengths:
        if isinstance(length, int) and length > rope.max_len:
            raise ShapeError(
                f"{port} length {length} exceeds the rotary max_len {rope.max_len}",
                arg=arg,
                hint=f"raise max_len to at least {length}",
            )


def rope_buffers(rope: RotaryArgs, head_dim: int, prefix: str = "") -> dict[str, Shape]:
    half = (head_dim if rope.rotary_dim is None else rope.rotary_dim) // 2
    out: dict[str, Shape] = {
        f"{prefix}cos": (rope.max_len, half),
        f"{prefix}sin": (rope.max_len, half),
    }
    if rope.scaling is not None and rope.scaling.type == "longrope":
        out[f"{prefix}long_inv_freq"] = (half,)  # the long factors' frequencies
    return out


def rope_config(rope: RotaryArgs) -> Any:
    """The torch module's options (:class:`archcomp.nn.rotary.RopeConfig`)."""
    from archcomp.nn.rotary import RopeConfig

    return RopeConfig(rope.theta, rope.rotary_dim, rope.interleaved, rope.max_len, _scaling(rope))


def _scaling(rope: RotaryArgs) -> Any:
    """The scaling's NamedTuple of archcomp.nn.rotary, with its type's defaults filled in."""
    from archcomp.nn import rotary

    s = rope.scaling
    if s is None or s.type == "default":
        return None
    old = s.original_max_len or 8192
    if s.type == "llama3":
        return rotary.Llama3Scaling(s.factor or 8.0, s.low_freq_factor, s.high_freq_factor, old)
    if s.type == "linear":
        return rotary.LinearScaling(s.factor or 1.0)
    if s.type == "dynamic":
        return rotary.DynamicScaling(s.factor or 1.0, old)
    if s.type == "yarn":
        extra = (s.mscale, s.mscale_all_dim, s.attention_factor, s.truncate)
        return rotary.YarnScaling(s.factor or 1.0, old, s.beta_fast, s.beta_slow, *extra)
    return rotary.LongRopeScaling(
        tuple(s.short_factor or ()),
        tuple(s.long_factor or ()),
        old,
        s.factor if s.factor is not None else rope.max_len / old,
        s.attention_factor,
    )


def _rotary_shape(ctx: ShapeCtx) -> TensorType:
    x, a = ctx.x, ctx.args
    need_float(x, what="rotary_embedding")
    if x.rank < 2:
        raise ShapeError(
            f"rotary_embedding needs [..., T, d] (heads before T), found {fmt_shape(x.shape)}",
            port="x",
        )
    d = ctx.infer("head_dim", ctx.concrete(x.shape[-1], "the head dim (last dim)", "x"))
    rotary_width(a, d, "rotary_dim", "scaling")
    check_rope_lengths(a, [(x.shape[-2], "the sequence")], "max_len")
    return x


def _rotary_lower(c: LowerCtx) -> Any:
    from archcomp.nn.rotary import RotaryEmbedding

    a: RotaryEmbeddingArgs = c.args
    return c.module(RotaryEmbedding(a.head_dim or 0, *rope_config(a), **c.factory))(c.x)


ROTARY = register(
    OpDef(
        "rotary_embedding",
        RotaryEmbeddingArgs,
        _rotary_shape,
        Style("posenc", "RoPE"),
        buffers=lambda a: rope_buffers(a, a.head_dim or 0),  # non-persistent
        lower=_rotary_lower,
        doc="Rotary position embedding on query or key heads [..., T, d] at positions 0..T-1 "
        "(rotate-half or interleaved pairs, partial rotation, scaling: llama3, linear, "
        "dynamic, yarn, longrope); no "
        "parameters. multi_head_attention's rope: applies it to q and k inside the op.",
    )
)
