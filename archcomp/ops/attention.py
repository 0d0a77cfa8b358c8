"""Attention: multi-head attention (with grouped-query heads, RoPE and a sliding window) and
scaled dot-product attention."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Shape, add, fmt_shape, mul, prod
from archcomp.ops.attention_figures import (
    MULTI_HEAD_FIGURE,
    SCALED_DOT_PRODUCT_FIGURE,
    mha_caption,
    mha_figure,
    sdpa_figure,
)
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


def _same_dtype(ctx: ShapeCtx, ports: tuple[str, ...], what: str) -> str:
    types = {p: t for p in ports if (t := ctx.get(p)) is not None}
    first = types[ports[0]].dtype
    for port, t in types.items():
        need_float(t, port, what)
        if t.dtype != first:
            raise ShapeError(
                f"{port} is {t.dtype} but {ports[0]} is {first}", port=port, hint="cast one of them"
            )
    return first


def _same_dim(a: Dim, b: Dim, message: str, port: str) -> None:
    if a != b:
        raise ShapeError(message, port=port)


# -- multi_head_attention ------------------------------------------------------------------------


class ProjectionBias(OpArgs):
    """Which of the four projections have a bias (Qwen2: q, k, v and not out; Whisper: all
    but k)."""

    q: bool = Field(default=True, description="bias on q_proj")
    k: bool = Field(default=True, description="bias on k_proj")
    v: bool = Field(default=True, description="bias on v_proj")
    out: bool = Field(default=True, description="bias on out_proj")


class QKNormArgs(OpArgs):
    """A norm of the queries and keys before RoPE and the scores: over each head's ``head_dim``
    (Qwen3) or over the whole projection (OLMo-2); parameters ``q_norm.weight`` and
    ``k_norm.weight`` (and ``.bias`` for a layer norm)."""

    kind: Literal["rms", "layer"] = Field(default="rms", description="RMSNorm or LayerNorm")
    per_head: bool = Field(
        default=True, description="normalize each head (true) or the whole projection (false)"
    )
    eps: float = Field(default=1e-6, gt=0.0, description="added to the variance")
    offset: float = Field(
        default=0.0,
        description="rms: gain offset, (offset + weight) * x_normed in float32 (Gemma 3: 1; "
        "see rms_norm)",
    )


class MultiHeadAttentionArgs(OpArgs):
    """Multi-head attention, batch-first: query [B, T, E], key [B, S, kdim], value [B, S, vdim].

    ``embed_dim``, ``kdim`` and ``vdim`` are inferred from the inputs' last dims; without
    ``head_dim``, ``embed_dim`` must divide by ``num_heads``. ``causal`` masks future keys (the
    decoder's masked self-attention). ``dropout`` applies to the attention weights, in training
    mode only. ``num_kv_heads`` below ``num_heads`` shares each key/value head among a group of
    query heads (grouped-query attention; 1 = multi-query); ``rope`` rotates q and k (RoPE)
    inside the op; ``window`` (with ``causal``) lets each query see itself and the
    ``window - 1`` keys before it (Mistral's sliding window). ``bias`` is one bool or a mapping
    ``{q, k, v, out}``; ``qk_norm`` normalizes q and k; ``scale`` replaces 1/sqrt(head_dim);
    ``softcap`` bounds the scores by ``softcap * tanh(scores / softcap)`` (Gemma 2), written
    out instead of torch's fused kernel.
    """

    num_heads: int = Field(gt=0, description="number of heads h; d_k = embed_dim / h")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    bias: bool | ProjectionBias = Field(
        default=True, description="bias on the four projections, or {q, k, v, out} each"
    )
    causal: bool = Field(default=False, description="mask key j > query i")
    num_kv_heads: int | None = Field(
        default=None, gt=0, description="key/value heads, dividing num_heads (default: num_heads)"
    )
    window: int = Field(
        default=0,
        ge=0,
        description="sliding window with causal: query i sees keys i - window + 1 .. i "
        "(0: no window)",
    )
    rope: RotaryArgs | None = Field(
        default=None, description="rotary position embedding of q and k (see rotary_embedding)"
    )
    head_dim: int | None = Field(
        default=None, gt=0, description="query/key size per head d_k (default embed_dim / h)"
    )
    v_head_dim: int | None = Field(
        default=None, gt=0, description="value size per head d_v (default head_dim)"
    )
    qk_norm: QKNormArgs | None = Field(
        default=None, description="norm of q and k: {kind: rms|layer, per_head, eps, offset}"
    )
    scale: float | None = Field(
        default=None, gt=0.0, description="score scale (default 1/sqrt(head_dim))"
    )
    softcap: float | None = Field(
        default=None, gt=0.0, description="soft cap of the scores: softcap * tanh(s / softcap)"
    )
    out_name: Literal["out_proj", "o_proj", "dense", "c_proj"] = Field(
        default="out_proj",
        description="the output projection's name: out_proj (torch), o_proj (transformers' "
        "Llama family, whose weights then load by their own keys), dense (GPT-NeoX) or c_proj "
        "(GPT-2)",
    )
    transposed: bool = Field(
        default=False,
        description="projection weights stored (in, out), as GPT-2's Conv1D (see linear)",
    )
    q_name: str = Field(
        default="q_proj",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the query projection's name (BERT: query)",
    )
    k_name: str = Field(
        default="k_proj",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the key projection's name (BERT: key)",
    )
    v_name: str = Field(
        default="v_proj",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the value projection's name (BERT: value)",
    )
    out_proj: bool = Field(
        default=True,
        description="false: no output projection, the result is the merged heads "
        "(B, T, h d_v) (BERT's sits in the module after the attention)",
    )
    qkv_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="one fused projection of this name in place of q_proj, k_proj and v_proj: "
        "rows q, then k, then v (Phi-3's qkv_proj); self-attention, bias one bool",
    )
    qkv_layout: Literal["stacked", "per_head"] = Field(
        default="stacked",
        description="the rows of qkv_name: all of q, then k, then v (stacked), or head by head "
        "q_i, k_i, v_i (per_head: GPT-NeoX's query_key_value; no num_kv_heads)",
    )
    in_proj: bool = Field(
        default=False,
        description="torch.nn.MultiheadAttention's packed projection in place of q_proj, k_proj "
        "and v_proj: parameters in_proj_weight [q; k; v rows, E] and in_proj_bias, the q rows "
        "applied to query, the k rows to key, the v rows to value (cross-attention too), so "
        "its state_dict loads as is; kdim = vdim = embed_dim",
    )
    batch_first: bool = Field(
        default=True,
        description="false: query [T, B, E], key and value [S, B, ...] and the result "
        "[T, B, E], sequence first (torch.nn.MultiheadAttention's default)",
    )
    relative_position_bias: int | list[int] | None = Field(
        default=None,
        description="Swin's learned relative position bias inside the op, for windows of this "
        "side (or [Wh, Ww]): a submodule relative_position_bias (see "
        "swin_relative_position_bias) added to the scores; T = S = Wh Ww",
    )
    embed_dim: int | None = Field(default=None, gt=0, description="inferred from query")
    kdim: int | None = Field(default=None, gt=0, description="inferred from key")
    vdim: int | None = Field(default=None, gt=0, description="inferred from value")


def multi_head_attention_label(args: MultiHeadAttentionArgs) -> str:
    """The paper's name for a node: 'Masked Multi-Head Attention' when causal, 'Sliding-Window
    Attention' with a window (Mistral), 'Grouped-Query' for fewer key/value heads (Llama),
    'Soft-Capped ...' with a soft cap (Gemma 2)."""
    capped = "Soft-Capped " if args.softcap is not None else ""
    if args.window:
        return f"{capped}Sliding-Window Attention"
    kind = "Multi-Head"
    if args.num_kv_heads is not None and args.num_kv_heads < args.num_heads:
        kind = "Multi-Query" if args.num_kv_heads == 1 else "Grouped-Query"
    return f"{capped}Masked {kind} Attention" if args.causal else f"{capped}{kind} Attention"


def check_score_input(ctx: ShapeCtx, port: str, scores: Shape, dtype: str, what: str) -> None:
    """An additive ``score_bias`` or a ``mask`` (bool or additive) broadcasting to the
    ``scores`` shape (the leading dims may be left out or 1)."""
    t = ctx.get(port)
    if t is None:
        return
    ok = (dtype, "bool") if port == "mask" else (dtype,)
    if t.dtype not in ok:
        want = "bool (True = take part) or " if port == "mask" else ""
        raise ShapeError(
            f"{port} must be {want}{dtype} like the query (added to the scores), found {t.dtype}",
            port=port,
            hint=f"declare it with dtype: {' or '.join(ok)}",
        )
    lead = len(scores) - t.rank
    if lead < 0 or any(d not in (1, want) for d, want in zip(t.shape, scores[lead:], strict=True)):
        raise ShapeError(
            f"{port} {fmt_shape(t.shape)} does not broadcast to the scores {what} = "
            f"{fmt_shape(scores)}",
            port=port,
            hint="each dim must equal the scores' or be 1; leading dims may be left out",
        )


def _head_dims(a: MultiHeadAttentionArgs) -> tuple[int, int, int]:
    """(key/value heads, d_k, d_v)."""
    kv_heads = a.num_kv_heads if a.num_kv_heads is not None else a.num_heads
    d_k = a.head_dim if a.head_dim is not None else (a.embed_dim or 0) // a.num_heads
    return kv_heads, d_k, a.v_head_dim if a.v_head_dim is not None else d_k


def _batch_first(t: TensorType, first: bool) -> TensorType:
    """``t`` with its batch dim first (sequence-first inputs swap their first two)."""
    if first or t.rank < 2:
        return t
    return TensorType((t.shape[1], t.shape[0], *t.shape[2:]), t.dtype)


def _mha_inputs(ctx: ShapeCtx) -> tuple[Dim, Dim, Dim, Dim, str]:
    """B, T, E, S and the dtype of query, key, value, with their ranks and sizes checked."""
    q, k, v = ctx.get("query"), ctx.get("key"), ctx.get("value")
    assert q is not None and k is not None and v is not None
    first = ctx.args.batch_first
    q, k, v = (_batch_first(t, first) for t in (q, k, v))
    dtype = _same_dtype(ctx, ("query", "key", "value"), "multi_head_attention")
    for port, t, dims in (
        ("query", q, "B, T, E"),
        ("key", k, "B, S, kdim"),
        ("value", v, "B, S, vdim"),
    ):
        if t.rank != 3:
            order = "batch first" if first else "sequence first, dims given batch first"
            raise ShapeError(
                f"{port} must be [{dims}] ({order}), found {fmt_shape(t.shape)}",
                port=port,
                hint="multi_head_attention takes batched, batch-first inputs",
            )
    B, T, E = q.shape
    S = k.shape[1]
    _same_dim(k.shape[0], B, f"key batch {k.shape[0]} differs from query batch {B}", "key")
    _same_dim(v.shape[0], B, f"value batch {v.shape[0]} differs from query batch {B}", "value")
    _same_dim(v.shape[1], S, f"value length {v.shape[1]} differs from key length {S}", "value")
    ctx.infer("kdim", ctx.concrete(k.shape[2], "the key's last dim (kdim)", "key"))
    ctx.infer("vdim", ctx.concrete(v.shape[2], "the value's last dim (vdim)", "value"))
    return B, T, E, S, dtype


def _check_key_padding_mask(ctx: ShapeCtx, batch: Dim, keys: Dim) -> None:
    mask = ctx.get("key_padding_mask")
    if mask is None:
        return
    if mask.dtype != "bool":
        raise ShapeError(
            f"key_padding_mask must be bool (True = ignore that key), found {mask.dtype}",
            port="key_padding_mask",
            hint="declare it with dtype: bool",
        )
    if mask.shape != (batch, keys):
        raise ShapeError(
            f"key_padding_mask must be [B, S] = {fmt_shape((batch, keys))}, "
            f"found {fmt_shape(mask.shape)}",
            port="key_padding_mask",
        )


def _check_fused(ctx: ShapeCtx, a: MultiHeadAttentionArgs, e: int) -> None:
    """A fused q/k/v projection reads one input: key and value must be the query's shape."""
    q, k = ctx.get("query"), ctx.get("key")
    assert q is not None and k is not None
    if a.kdim not in (None, e) or a.vdim not in (None, e) or k.shape != q.shape:
        raise ShapeError(
            "qkv_name fuses the projections of one input: self-attention only",
            arg="qkv_name",
            hint="give only query, or drop qkv_name",
        )
    per_head = a.qkv_layout == "per_head"
    if per_head and (a.num_kv_heads not in (None, a.num_heads) or a.v_head_dim is not None):
        raise ShapeError(
            "qkv_layout per_head holds q, k and v of each head: one key/value head per query "
            "head, v the size of q",
            arg="qkv_layout",
            hint="drop num_kv_heads and v_head_dim, or use qkv_layout: stacked",
        )
    if not isinstance(a.bias, bool):
        raise ShapeError(
            "a fused qkv projection has one bias for q, k and v",
            arg="bias",
            hint="bias: true or false, or drop qkv_name",
        )


def _check_packed(ctx: ShapeCtx, a: MultiHeadAttentionArgs, e: int) -> None:
    """torch's packed in_proj_weight: every row reads embed_dim features, one bias for all."""
    k, v = ctx.get("key"), ctx.get("value")
    assert k is not None and v is not None
    if a.qkv_name is not None or k.shape[2] != e or v.shape[2] != e:
        raise ShapeError(
            "in_proj packs q, k and v rows of embed_dim inputs each: key and value must have "
            f"the query's width {e}, and no qkv_name",
            arg="in_proj",
            hint="drop in_proj (q_proj, k_proj, v_proj take other widths)",
        )
    if not isinstance(a.bias, bool):
        raise ShapeError(
            "in_proj has one bias, in_proj_bias, for q, k and v",
            arg="bias",
            hint="bias: true or false, or drop in_proj",
        )


def _mha_shape(ctx: ShapeCtx) -> TensorType:
    a: MultiHeadAttentionArgs = ctx.args
    B, T, E, S, dtype = _mha_inputs(ctx)
    e = ctx.infer("embed_dim", ctx.concrete(E, "the query's last dim (embed_dim)", "query"))
    if a.head_dim is None and e % a.num_heads != 0:
        raise ShapeError(
            f"embed_dim {e} is not divisible by num_heads {a.num_heads}",
            arg="num_heads",
            hint=f"num_heads must divide {e}: each head gets embed_dim / num_heads dims "
            "(or give head_dim)",
        )
    kv_heads = a.num_kv_heads if a.num_kv_heads is not None else a.num_heads
    if a.num_heads % kv_heads != 0:
        raise ShapeError(
            f"num_kv_heads {kv_heads} does not divide num_heads {a.num_heads}",
            arg="num_kv_heads",
            hint="each key/value head serves an equal group of query heads",
        )
    if a.window and not a.causal:
        raise ShapeError(
            "a sliding window needs causal attention",
            arg="window",
            hint="add causal: true, or drop window",
        )
    if a.qk_norm is not None and a.qk_norm.offset and a.qk_norm.kind != "rms":
        raise ShapeError(
            "qk_norm's offset is the gain offset of an RMS norm",
            arg="qk_norm",
            hint="use kind: rms with offset, or drop offset",
        )
    if a.rope is not None:
        rotary_width(a.rope, _head_dims(a.model_copy(update={"embed_dim": e}))[1], "rope", "rope")
        check_rope_lengths(a.rope, [(T, "the query"), (S, "the key")], "rope")
    if a.qkv_name is not None:
        _check_fused(ctx, a, e)
    if a.in_proj:
        _check_packed(ctx, a, e)
    _check_key_padding_mask(ctx, B, S)
    if a.relative_position_bias is not None:
        _check_window_bias(a, T, S)
    scores = (B, a.num_heads, T, S)
    for port in ("mask", "score_bias"):
        check_score_input(ctx, port, scores, dtype, "[B, h, T, S]")
    if not a.out_proj:  # (B, T, h * d_v): the output projection is the next module's
        E = a.num_heads * _head_dims(a.model_copy(update={"embed_dim": e}))[2]
    return TensorType((B, T, E) if a.batch_first else (T, B, E), dtype)


def _window(a: MultiHeadAttentionArgs) -> tuple[int, int] | None:
    w = a.relative_position_bias
    if w is None:
        return None
    return (w, w) if isinstance(w, int) else (w[0], w[-1])


def _check_window_bias(a: MultiHeadAttentionArgs, t: Dim, s: Dim) -> None:
    """A window bias needs query and key of one window each: T = S = Wh Ww."""
    w = a.relative_position_bias
    if isinstance(w, list) and (len(w) not in (1, 2) or min(w, default=0) <= 0):
        raise ShapeError(f"relative_position_bias must be a side or [Wh, Ww], found {w}")
    wh, ww = _window(a) or (0, 0)
    n = wh * ww
    if (isinstance(w, int) and w <= 0) or n != t or n != s:
        raise ShapeError(
            f"a relative position bias of {wh} x {ww} windows needs {n} queries and {n} keys, "
            f"found {t} and {s}",
            arg="relative_position_bias",
            hint="partition the map into windows first (one window per row of the batch)",
        )


def _bias_arg(a: MultiHeadAttentionArgs) -> bool | tuple[bool, bool, bool, bool]:
    b = a.bias
    return b if isinstance(b, bool) else (b.q, b.k, b.v, b.out)


def _mha_params(a: MultiHeadAttentionArgs) -> dict[str, Shape]:
    e, h = a.embed_dim or 0, a.num_heads
    kv_heads, d_k, d_v = _head_dims(a)
    kdim = a.kdim if a.kdim is not None else e
    vdim = a.vdim if a.vdim is not None else e
    bias = _bias_arg(a)
    bq, bk, bv, bo = bias if isinstance(bias, tuple) else (bias,) * 4
    p: dict[str, Shape] = {}
    projections = [
        (a.q_name, h * d_k, e, bq),
        (a.k_name, kv_heads * d_k, kdim, bk),
        (a.v_name, kv_heads * d_v, vdim, bv),
    ]
    if a.qkv_name is not None:  # one (q; k; v) projection
        projections = [(a.qkv_name, (h + kv_heads) * d_k + kv_heads * d_v, e, bq)]
    if a.in_proj:  # torch's packed parameters: in_proj_weight, in_proj_bias
        projections = []
        p["in_proj_weight"] = ((h + kv_heads) * d_k + kv_heads * d_v, e)
        if bq:
            p["in_proj_bias"] = ((h + kv_heads) * d_k + kv_heads * d_v,)
    if a.out_proj:
        projections.append((a.out_name, e, h * d_v, bo))
    for name, out, fan_in, biased in projections:
        p[f"{name}.weight"] = (fan_in, out) if a.transposed else (out, fan_in)
        if biased:
            p[f"{name}.bias"] = (out,)
    if a.qk_norm is not None:
        per_head = a.qk_norm.per_head
        for name, width in (
            ("q_norm", d_k if per_head else h * d_k),
            ("k_norm", d_k if per_head else kv_heads * d_k),
        ):
            p[f"{name}.weight"] = (width,)
            if a.qk_norm.kind == "layer":
                p[f"{name}.bias"] = (width,)
    if (w := _window(a)) is not None:
        p["relative_position_bias.relative_position_bias_table"] = (
            (2 * w[0] - 1) * (2 * w[1] - 1),
            h,
        )
    return p


def _mha_buffers(a: MultiHeadAttentionArgs) -> dict[str, Shape]:
    out: dict[str, Shape] = {}
    if (w := _window(a)) is not None:  # non-persistent, as Swin's own
        out["relative_position_bias.relative_position_index"] = (w[0] * w[1], w[0] * w[1])
    if a.rope is None:
        return out
    return out | rope_buffers(a.rope, _head_dims(a)[1], "rotary.")  # non-persistent


def _mha_macs(a: MultiHeadAttentionArgs, ins: Any, outs: dict[str, TensorType]) -> Dim:
    """The four projections, the q/k norms (one per element), then Q K^T and (weights) V:
    every query head scores all S keys on every path (a window or mask hides scores, it does
    not skip them; the soft-capped path computes the same two matmuls, its tanh is no MAC)."""
    q, k = (_batch_first(ins[p], a.batch_first) for p in ("query", "key"))
    B, T, E = q.shape
    S = k.shape[1]
    kdim, vdim = k.shape[2], ins["value"].shape[2]
    kv_heads, d_k, d_v = _head_dims(a)
    h = a.num_heads
    rows_q, rows_kv = mul(B, T), mul(B, S)
    proj = add(
        mul(rows_q, mul(E, h * d_k)),
        mul(rows_kv, add(mul(kdim, kv_heads * d_k), mul(vdim, kv_heads * d_v))),
    )
    if a.out_proj:
        proj = add(proj, mul(rows_q, mul(h * d_v, E)))  # W^Q, W^K, W^V, then W^O
    if a.qk_norm is not None:
        proj = add(proj, add(mul(rows_q, h * d_k), mul(rows_kv, kv_heads * d_k)))
    return add(proj, mul(prod((B, T, S)), h * (d_k + d_v)))


def _mha_lower(c: LowerCtx) -> Any:
    from archcomp.nn.attention import MultiHeadAttention

    a: MultiHeadAttentionArgs = c.args
    n = a.qk_norm
    mha = MultiHeadAttention(
        a.embed_dim or 0,
        a.num_heads,
        dropout=a.dropout,
        bias=_bias_arg(a),
        kdim=a.kdim,
        vdim=a.vdim,
        causal=a.causal,
        num_kv_heads=a.num_kv_heads,
        window=a.window,
        rope=rope_config(a.rope) if a.rope is not None else None,
        head_dim=a.head_dim,
        v_head_dim=a.v_head_dim,
        qk_norm=(n.kind, n.per_head, n.eps, n.offset) if n is not None else None,
        scale=a.scale,
        softcap=a.softcap,
        out_name=a.out_name,
        qkv_name=a.qkv_name,
        qkv_layout=a.qkv_layout,
        in_proj=a.in_proj,
        batch_first=a.batch_first,
        transposed=a.transposed,
        names=(a.q_name, a.k_name, a.v_name)
        if a.out_proj
        else (a.q_name, a.k_name, a.v_name, None),
        relative_position_bias=_window(a),
        **c.factory,
    )
    ins = c.inputs
    ports = ("key_padding_mask", "mask", "score_bias")
    extra = {p: ins[p] for p in ports if ins.get(p) is not None}
    return c.module(mha)(ins["query"], ins["key"], ins["value"], **extra)  # (B, T, E)


MULTI_HEAD_ATTENTION = register(
    OpDef(
        "multi_head_attention",
        MultiHeadAttentionArgs,
        _mha_shape,
        Style(
            "attention",
            "Multi-Head Attention",
            label_for=multi_head_attention_label,
            figure=MULTI_HEAD_FIGURE,
            figure_for=mha_figure,
            caption_for=mha_caption,
        ),
        inputs=(
            Port("query"),
            Port("key", default="query"),
            Port("value", default="key"),
            Port("key_padding_mask", optional=True),
            Port("mask", optional=True),
            Port("score_bias", optional=True),
        ),
        params=_mha_params,
        buffers=_mha_buffers,
        macs=_mha_macs,
        lower=_mha_lower,
        doc="Multi-head attention (self-attention when only query is given), batch-first. "
        "key_padding_mask is bool [B, S]: True marks a key to ignore (padding), as in torch. "
        "Grouped-query heads (num_kv_heads), RoPE on q and k (rope: {theta: ...}) and a "
        "causal sliding window (window) cover Llama and Mistral; head_dim and v_head_dim, a "
        "bias per projection (bias: {q, k, v, out}), qk_norm (per head or over the whole "
        "projection; Gemma 3's (1 + w) gain by offset), scale and softcap cover Qwen2/3, "
        "OLMo-2, Gemma 2 and 3, and Whisper. The "
        "optional mask (bool, True = take part, or additive) and score_bias (additive: T5's "
        "or Swin's relative position bias) broadcast to the scores [B, h, T, S]; "
        "relative_position_bias holds Swin's table inside the op (transformers 5's "
        "SwinAttention, whose keys then load as they are). Torch's "
        "fused SDPA on every path but softcap's (written out). MACs: the projections, one per "
        "q/k norm element, and B h T S (d_k + d_v) for Q K^T and weights V on every path "
        "(masks and windows hide scores, they do not skip them).",
    )
)


# -- scaled_dot_product_attention ----------------------------------------------------------------


class ScaledDotProductAttentionArgs(OpArgs):
    """softmax(Q K^T * scale + mask) V on query [..., T, d], key [..., S, d], value [..., S, dv].

    ``scale`` defaults to 1/sqrt(d); ``dropout`` applies to the weights in training mode only.
    Key and value may have fewer heads than the query (dim -3, dividing it): each serves a
    group of query heads (grouped-query attention, torch's ``enable_gqa``). The optional
    ``mask`` (bool, True = take part, or additive) and ``score_bias`` (additive) broadcast to
    the scores [..., T, S]; ``window`` (with ``causal``) and ``softcap`` as in
    multi_head_attention.
    """

    causal: bool = Field(default=False, description="mask key j > query i")
    scale: float | None = Field(default=None, gt=0.0, description="default 1/sqrt(d)")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    window: int = Field(default=0, ge=0, description="sliding window with causal (0: no window)")
    softcap: float | None = Field(
        default=None, gt=0.0, description="soft cap of the scores: softcap * tanh(s / softcap)"
    )


def _grouped(q: TensorType, t: TensorType) -> bool:
    """Whether t's heads (dim -3) are a divisor of q's, all other leading dims equal."""
    if q.rank < 3 or t.rank != q.rank or t.shape[:-3] != q.shape[:-3]:
        return False
    hq, hkv = q.shape[-3], t.shape[-3]
    return isinstance(hq, int) and isinstance(hkv, int) and hq % hkv == 0


def _sdpa_shape(ctx: ShapeCtx) -> TensorType:
    q, k, v = ctx.get("query"), ctx.get("key"), ctx.get("value")
    assert q is not None and k is not None and v is not None
    dtype = _same_dtype(ctx, ("query", "key", "value"), "scaled_dot_product_attention")
    for port, t in (("query", q), ("key", k), ("value", v)):
        if t.rank < 2:
            raise ShapeError(f"{port} must be [..., L, d], found {fmt_shape(t.shape)}", port=port)
    for port, t in (("key", k), ("value", v)):
        if t.shape[:-2] != q.shape[:-2] and not _grouped(q, t):
            raise ShapeError(
                f"{port} leading dims {fmt_shape(t.shape[:-2])} differ from query's "
                f"{fmt_shape(q.shape[:-2])}",
                port=port,
                hint="key/value heads (dim -3) may be fewer than the query's if they divide them",
            )
    if v.shape[:-2] != k.shape[:-2]:
        raise ShapeError(
            f"value leading dims {fmt_shape(v.shape[:-2])} differ from key's "
            f"{fmt_shape(k.shape[:-2])}",
            port="value",
        )
    d, S = q.shape[-1], k.shape[-2]
    _same_dim(k.shape[-1], d, f"key dim {k.shape[-1]} differs from query dim {d}", "key")
    _same_dim(v.shape[-2], S, f"value length {v.shape[-2]} differs from key length {S}", "value")
    if ctx.args.window and not ctx.args.causal:
        raise ShapeError(
            "a sliding window needs causal attention",
            arg="window",
            hint="add causal: true, or drop window",
        )
    scores = (*q.shape[:-1], S)
    for port in ("mask", "score_bias"):
        check_score_input(ctx, port, scores, dtype, "[..., T, S]")
    return TensorType((*q.shape[:-1], v.shape[-1]), dtype)


def _sdpa_macs(a: Any, ins: Any, outs: dict[str, TensorType]) -> Dim:
    q, k, v = ins["query"], ins["key"], ins["value"]
    scores = prod((*q.shape[:-1], k.shape[-2]))  # [..., T, S]
    return mul(scores, add(q.shape[-1], v.shape[-1]))  # Q K^T, then weights V


def _sdpa_lower(c: LowerCtx) -> Any:
    """A plain ``F.scaled_dot_product_attention`` call where it says everything; the module
    (same kernel, written-out math only for ``softcap``) for dropout, a window, a soft cap, or
    a causal or second mask to combine with the given one."""
    import torch.nn.functional as F

    a: ScaledDotProductAttentionArgs = c.args
    q, k, v = c.inputs["query"], c.inputs["key"], c.inputs["value"]
    masks = {p: c.inputs[p] for p in ("mask", "score_bias") if c.inputs.get(p) is not None}
    gqa = c.in_types["key"].shape[:-2] != c.in_types["query"].shape[:-2]
    extra = {"enable_gqa": True} if gqa else {}
    combine = len(masks) > 1 or (a.causal and bool(masks))
    if a.dropout > 0 or a.window or a.softcap is not None or combine:
        from archcomp.nn.attention import ScaledDotProductAttention

        sdpa = ScaledDotProductAttention(
            a.dropout, a.causal, a.scale, **extra, window=a.window, softcap=a.softcap
        )
        return c.module(sdpa)(q, k, v, **masks)
    mask = next(iter(masks.values()), None)
    if mask is not None:
        extra["attn_mask"] = mask
    return c.call(
        F.scaled_dot_product_attention, q, k, v, is_causal=a.causal, scale=a.scale, **extra
    )


SCALED_DOT_PRODUCT_ATTENTION = register(
    OpDef(
        "scaled_dot_product_attention",
        ScaledDotProductAttentionArgs,
        _sdpa_shape,
        Style(
            "attention",
            "Scaled Dot-Product Attention",
            figure=SCALED_DOT_PRODUCT_FIGURE,
            figure_for=sdpa_figure,
        ),
        inputs=(
            Port("query"),
            Port("key"),
            Port("value"),
            Port("mask", optional=True),
            Port("score_bias", optional=True),
        ),
        macs=_sdpa_macs,
        lower=_sdpa_lower,
        doc="softmax(Q K^T / sqrt(d) + mask) V, fused; no parameters. Key/value heads may "
        "divide the query heads (grouped-query attention). Optional mask (bool, True = take "
        "part, or additive) and score_bias (additive) broadcast to the scores [..., T, S]; "
        "a sliding window (with causal) and a soft cap (softcap * tanh(s / softcap), written "
        "out: torch has no fused kernel for it). MACs: Q K^T and weights V on every path.",
    )
)
