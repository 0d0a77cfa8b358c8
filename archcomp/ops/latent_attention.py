"""Latent attention: multi-head latent attention (MLA; DeepSeek-V2 and V3), keys and values
expanded from one compressed latent per token, position in a decoupled RoPE head."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Shape, add, fmt_shape, mul
from archcomp.ir.drawing import Figure, Part
from archcomp.ops.attention import check_score_input
from archcomp.ops.common import need_float
from archcomp.ops.positional import (
    RotaryArgs,
    check_rope_lengths,
    rope_buffers,
    rope_config,
    rotary_width,
)
from archcomp.ops.registry import (
    LowerCtx,
    OpArgs,
    OpDef,
    Port,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)


class MultiHeadLatentAttentionArgs(OpArgs):
    """Multi-head latent attention (DeepSeek-V2/V3) on x [B, T, E], self-attention.

    Keys and values of every head come from one latent per token, ``c^KV = RMSNorm(x W^DKV)``
    (``kv_lora_rank`` dims), expanded by ``kv_b_proj`` to ``qk_nope_head_dim`` key and
    ``v_head_dim`` value dims per head. Position is a decoupled RoPE head: each query head
    has ``qk_rope_head_dim`` more dims, rotated, and all heads share one rotated key of that
    size (``kv_a_proj_with_mqa`` projects it beside the latent). Queries go through their own
    latent with ``q_lora_rank`` (V2, V3), else one ``q_proj`` (V2-Lite). Parameter names are
    DeepSeek's. ``rope.interleaved: true`` is DeepSeek's layout (transformers'
    ``rope_interleave``). ``embed_dim`` is inferred.
    """

    num_heads: int = Field(gt=0, description="number of heads h")
    kv_lora_rank: int = Field(gt=0, description="size of the key/value latent c^KV")
    qk_nope_head_dim: int = Field(gt=0, description="per-head query/key dims without RoPE")
    qk_rope_head_dim: int = Field(
        gt=0, description="per-head query dims and shared key dims with RoPE (even)"
    )
    v_head_dim: int = Field(gt=0, description="per-head value dims")
    q_lora_rank: int | None = Field(
        default=None, gt=0, description="size of the query latent c^Q (none: one q_proj)"
    )
    rope: RotaryArgs = Field(
        description="rotary embedding of the decoupled head (DeepSeek: interleaved: true)"
    )
    causal: bool = Field(default=False, description="mask key j > query i")
    bias: bool = Field(
        default=False,
        description="DeepSeek's attention_bias: bias on q_a_proj, kv_a_proj_with_mqa, o_proj",
    )
    scale: float | None = Field(
        default=None,
        gt=0.0,
        description="score scale (default (qk_nope_head_dim + qk_rope_head_dim)^-1/2, times "
        "m(factor, mscale_all_dim)^2 with YaRN RoPE that gives mscale_all_dim, as DeepSeek)",
    )
    norm_eps: float = Field(default=1e-6, gt=0.0, description="eps of the two latent RMS norms")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    embed_dim: int | None = Field(default=None, gt=0, description="inferred from x")


def latent_scale(a: MultiHeadLatentAttentionArgs) -> float | None:
    """The score scale: ``scale`` if given; with YaRN RoPE and ``mscale_all_dim``, DeepSeek's
    (d_nope + d_rope)^-1/2 m(factor, mscale_all_dim)^2, m(s, k) = 0.1 k ln(s) + 1 (1 for s <=
    1; transformers' ``yarn_get_mscale``); else None, the module's default."""
    s = a.rope.scaling
    if a.scale is not None or s is None or s.type != "yarn" or not s.mscale_all_dim:
        return a.scale
    factor = s.factor or 1.0
    m = 1.0 if factor <= 1 else 0.1 * s.mscale_all_dim * math.log(factor) + 1.0
    return float((a.qk_nope_head_dim + a.qk_rope_head_dim) ** -0.5 * m * m)


def multi_head_latent_attention_label(a: MultiHeadLatentAttentionArgs) -> str:
    """'Masked Multi-Head Latent Attention' when causal, as multi_head_attention's label."""
    return "Masked Multi-Head Latent Attention" if a.causal else "Multi-Head Latent Attention"


def _mla_shape(ctx: ShapeCtx) -> TensorType:
    a: MultiHeadLatentAttentionArgs = ctx.args
    x = ctx.x
    need_float(x, "x", "multi_head_latent_attention")
    if x.rank != 3:
        raise ShapeError(
            f"x must be [B, T, E] (batch first), found {fmt_shape(x.shape)}",
            port="x",
            hint="multi_head_latent_attention takes batched, batch-first inputs",
        )
    B, T, E = x.shape
    ctx.infer("embed_dim", ctx.concrete(E, "the input's last dim (embed_dim)", "x"))
    if a.qk_rope_head_dim % 2:
        raise ShapeError(
            f"qk_rope_head_dim {a.qk_rope_head_dim} is odd: RoPE rotates pairs of dims",
            arg="qk_rope_head_dim",
            hint="give an even qk_rope_head_dim (DeepSeek: 64)",
        )
    rotary_width(a.rope, a.qk_rope_head_dim, "rope", "rope")
    check_rope_lengths(a.rope, [(T, "the sequence")], "rope")
    check_score_input(ctx, "mask", (B, a.num_heads, T, T), x.dtype, "[B, h, T, T]")
    return x


def _mla_params(a: MultiHeadLatentAttentionArgs) -> dict[str, Shape]:
    e, h = a.embed_dim or 0, a.num_heads
    d_qk = a.qk_nope_head_dim + a.qk_rope_head_dim
    p: dict[str, Shape] = {}
    if a.q_lora_rank is None:
        p["q_proj.weight"] = (h * d_qk, e)
    else:
        p["q_a_proj.weight"] = (a.q_lora_rank, e)
        if a.bias:
            p["q_a_proj.bias"] = (a.q_lora_rank,)
        p["q_a_layernorm.weight"] = (a.q_lora_rank,)
        p["q_b_proj.weight"] = (h * d_qk, a.q_lora_rank)
    p["kv_a_proj_with_mqa.weight"] = (a.kv_lora_rank + a.qk_rope_head_dim, e)
    if a.bias:
        p["kv_a_proj_with_mqa.bias"] = (a.kv_lora_rank + a.qk_rope_head_dim,)
    p["kv_a_layernorm.weight"] = (a.kv_lora_rank,)
    p["kv_b_proj.weight"] = (h * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank)
    p["o_proj.weight"] = (e, h * a.v_head_dim)
    if a.bias:
        p["o_proj.bias"] = (e,)
    return p


def _mla_macs(a: MultiHeadLatentAttentionArgs, ins: Any, outs: dict[str, TensorType]) -> Dim:
    """The projections (q directly or through its latent), one per latent-norm element, the
    expansion of c^KV to every head's k and v, then Q K^T (d_nope + d_rope per score) and
    weights V (d_v) over all T keys on every path (a mask hides scores, it does not skip
    them)."""
    B, T, E = ins["x"].shape
    h, d_qk = a.num_heads, a.qk_nope_head_dim + a.qk_rope_head_dim
    r_kv = a.kv_lora_rank
    if a.q_lora_rank is None:
        per_token = E * h * d_qk  # W^Q
    else:
        per_token = E * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * h * d_qk
    per_token += E * (r_kv + a.qk_rope_head_dim) + r_kv  # W^DKV and W^KR, the latent's norm
    per_token += r_kv * h * (a.qk_nope_head_dim + a.v_head_dim)  # W^UK, W^UV
    per_token += h * a.v_head_dim * E  # W^O
    rows = mul(B, T)
    return add(mul(rows, per_token), mul(mul(rows, T), h * (d_qk + a.v_head_dim)))


def _mla_lower(c: LowerCtx) -> Any:
    from archcomp.nn.latent_attention import MultiHeadLatentAttention

    a: MultiHeadLatentAttentionArgs = c.args
    mla = MultiHeadLatentAttention(
        a.embed_dim or 0,
        a.num_heads,
        a.kv_lora_rank,
        a.qk_nope_head_dim,
        a.qk_rope_head_dim,
        a.v_head_dim,
        q_lora_rank=a.q_lora_rank,
        rope=rope_config(a.rope),
        causal=a.causal,
        bias=a.bias,
        scale=latent_scale(a),
        norm_eps=a.norm_eps,
        dropout=a.dropout,
        **c.factory,
    )
    mask = c.inputs.get("mask")
    extra = {"mask": mask} if mask is not None else {}
    return c.module(mla)(c.inputs["x"], **extra)  # (B, T, E)


# The insides drawn by --expand (DeepSeek-V2's Figure 3, with the query latent of V2 and V3).
LATENT_FIGURE = Figure(
    parts=(
        Part("hidden", "Input Hidden h_t", "io"),  # the paper's box: x feeds both latents
        Part("q_a_proj", "Linear W^DQ", "linear"),
        Part("q_a_layernorm", "RMSNorm", "norm"),
        Part("q_b_proj", "Linear W^UQ, W^QR", "linear"),
        Part("rope_q", "RoPE", "embedding"),
        Part("concat_q", "Concat", "addnorm"),
        Part("kv_a_proj_with_mqa", "Linear W^DKV, W^KR", "linear"),
        Part("kv_a_layernorm", "RMSNorm (latent c^KV)", "norm"),
        Part("kv_b_proj", "Linear W^UK, W^UV", "linear"),
        Part("rope_k", "RoPE (shared key)", "embedding"),
        Part("concat_k", "Concat", "addnorm"),
        Part(
            "attention", "Scaled Dot-Product Attention", "attention", "scaled_dot_product_attention"
        ),
        Part("o_proj", "Linear W^O", "linear"),
    ),
    edges=(
        ("hidden", "q_a_proj"),
        ("hidden", "kv_a_proj_with_mqa"),
        ("q_a_proj", "q_a_layernorm"),
        ("q_a_layernorm", "q_b_proj"),
        ("q_b_proj", "rope_q"),
        ("q_b_proj", "concat_q"),
        ("rope_q", "concat_q"),
        ("kv_a_proj_with_mqa", "kv_a_layernorm"),
        ("kv_a_proj_with_mqa", "rope_k"),
        ("kv_a_layernorm", "kv_b_proj"),
        ("kv_b_proj", "concat_k"),
        ("rope_k", "concat_k"),
        ("concat_q", "attention:query"),
        ("concat_k", "attention:key"),
        ("kv_b_proj", "attention:value"),
        ("attention", "o_proj"),
    ),
    ports=(("x", "hidden"), ("mask", "attention:mask")),
    result="o_proj",
    stack=("attention",),
    stack_count="num_heads",
    same_rank=(("q_a_proj", "kv_a_proj_with_mqa"),),
)

MULTI_HEAD_LATENT_ATTENTION = register(
    OpDef(
        "multi_head_latent_attention",
        MultiHeadLatentAttentionArgs,
        _mla_shape,
        Style(
            "attention",
            "Multi-Head Latent Attention",
            label_for=multi_head_latent_attention_label,
            figure=LATENT_FIGURE,
        ),
        inputs=(Port("x"), Port("mask", optional=True)),
        params=_mla_params,
        buffers=lambda a: rope_buffers(a.rope, a.qk_rope_head_dim, "rotary."),  # non-persistent
        macs=_mla_macs,
        lower=_mla_lower,
        doc="Multi-head latent attention (DeepSeek-V2/V3), self-attention on x [B, T, E]: "
        "keys and values expanded per head from one RMS-normed latent c^KV (kv_lora_rank), "
        "queries from x (q_proj) or their own latent (q_lora_rank), a decoupled RoPE head "
        "(qk_rope_head_dim; one rotated key shared by all heads; rope.interleaved for "
        "DeepSeek's layout) and v_head_dim apart from the key's. Parameters named as "
        "DeepSeek's checkpoints (q_a_proj, q_a_layernorm, q_b_proj or q_proj, "
        "kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj); bias is attention_bias. "
        "A KV cache would store per token only the normed latent and the rotated shared key "
        "(kv_lora_rank + qk_rope_head_dim numbers). Optional mask (bool, True = take part, "
        "or additive) broadcasts to the scores [B, h, T, T]. Torch's fused SDPA (q, k of "
        "d_nope + d_rope, v of d_v). MACs: the projections, one per latent-norm element, "
        "and B h T T (d_nope + d_rope + d_v).",
    )
)
