"""Multi-head attention (Vaswani et al., 2017) on torch's fused scaled dot-product attention,
with the options of today's decoders: grouped-query attention (Ainslie et al., 2023; one K/V
head per group of query heads, 1 = multi-query), rotary position embeddings on q and k (Su et
al., 2021) and sliding-window causal attention (Mistral, Jiang et al., 2023).

Batch-first throughout. The projections are four ``nn.Linear`` submodules, so a state dict reads
``attn.q_proj.weight`` ... ``attn.out_proj.bias`` (``o_proj`` with ``out_name``). The forward
has no data-dependent Python branches: it traces under ``torch.compile(fullgraph=True)`` and
``torch.export``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archcomp.nn.cache_state import CrossKV, LayerKV
from archcomp.nn.norm import OffsetRMSNorm
from archcomp.nn.positional import SwinRelativePositionBias
from archcomp.nn.rotary import RopeConfig, RotaryEmbedding
from archcomp.nn.transposed_linear import TransposedLinear


def causal_mask(q_len: int, k_len: int, window: int, device: Any) -> Tensor:
    """(T, S) bool, True = query i may attend to key j: ``j <= i``, and with a window
    ``i - j < window`` (each query sees itself and the ``window - 1`` keys before it, as
    Mistral's sliding window). Top-left aligned, as ``is_causal`` in torch."""
    i = torch.arange(q_len, device=device)[:, None]  # (T, 1)
    j = torch.arange(k_len, device=device)[None, :]  # (1, S)
    visible = j <= i  # (T, S)
    return visible & (j > i - window) if window > 0 else visible


def score_mask(
    q: Tensor,
    k: Tensor,
    causal: bool,
    window: int,
    key_padding_mask: Tensor | None = None,
    mask: Tensor | None = None,
    score_bias: Tensor | None = None,
) -> tuple[Tensor | None, bool]:
    """One ``attn_mask`` for torch's SDPA from every mask and bias, and its ``is_causal``.

    bool masks (True = take part: the causal band, ``~key_padding_mask``, a bool ``mask``) are
    and-ed; additive ones (``score_bias``, a float ``mask``) summed, then -inf where a bool
    mask hides a key. Alone, ``causal`` stays ``is_causal`` (the fused kernels' fast path).
    Branches are on which arguments are given and on dtypes, never on values.
    """
    extra = key_padding_mask is not None or mask is not None or score_bias is not None
    if not causal or not (window or extra):
        keep: Tensor | None = None
    else:  # SDPA takes is_causal or attn_mask, not both: spell the causal pattern out
        keep = causal_mask(q.size(-2), k.size(-2), window, q.device)  # (T, S)
    if key_padding_mask is not None:
        pad = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        keep = pad if keep is None else keep & pad  # (B, 1, T, S)
    added = score_bias  # broadcasts to (B, h, T, S)
    if mask is not None and mask.dtype == torch.bool:
        keep = mask if keep is None else keep & mask
    elif mask is not None:
        added = mask if added is None else added + mask
    is_causal = causal and keep is None and added is None
    if added is None:
        return keep, is_causal
    if keep is not None:
        added = added.masked_fill(~keep, float("-inf"))
    return added, is_causal


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None,
    is_causal: bool,
    dropout: float,
    scale: float | None,
    softcap: float | None,
    gqa: bool,
) -> Tensor:
    """``softmax(Q K^T * scale + mask) V`` on (B, h, T, d), (B, h_kv, S, d), (B, h_kv, S, dv);
    K/V heads serve their group of query heads. Torch's fused SDPA unless ``softcap``; with it
    (Gemma 2) ``softcap * tanh(scores / softcap)`` before the mask, written out, the softmax
    in float32. ``gqa``: K/V have fewer heads than Q (dim -3)."""
    if softcap is None and gqa and not is_causal and _one_query_per_group(q, attn_mask):
        # one query per head (a decode step): each K/V head's group of query heads as rows of
        # one query matrix, K/V read once without expanding them (the fused kernel is faster)
        rows = q.reshape(*q.shape[:-3], k.size(-3), -1, q.size(-1))  # (B, h_kv, g, d)
        out = F.scaled_dot_product_attention(
            rows, k, v, attn_mask=attn_mask, dropout_p=dropout, scale=scale
        )  # (B, h_kv, g, dv)
        return out.reshape(*q.shape[:-1], v.size(-1))  # (B, h, 1, dv)
    if softcap is None:
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=dropout,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=gqa,
        )  # (B, h, T, dv)
    return _softcapped(q, k, v, attn_mask, is_causal, dropout, scale, softcap)


def _one_query_per_group(q: Tensor, attn_mask: Tensor | None) -> bool:
    """q (..., h, 1, d) with a mask the same for every head (none, or (..., 1, 1, S)): its
    heads may be stacked as rows of their K/V head's group."""
    if torch.jit.is_tracing() or q.dim() < 3 or q.size(-2) != 1:
        return False  # (a trace's sizes are tensors: the general path)
    return attn_mask is None or attn_mask.dim() < 3 or attn_mask.size(-3) == 1


def _softcapped(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None,
    is_causal: bool,
    dropout: float,
    scale: float | None,
    softcap: float,
) -> Tensor:
    """``attend`` with ``softcap * tanh(scores / softcap)`` before the mask, written out.

    Each group of query heads sharing a K/V head is stacked along the rows, so K and V are
    read in place (no copy per query head); ``scale / softcap`` is folded into the product
    (one GEMM with alpha, no pass over the scores), and the tanh and mask are applied in place
    where autograd allows it (the product and the scalar multiply keep no output)."""
    t, d = q.shape[-2:]
    s, dv = k.size(-2), v.size(-1)
    n = math.prod(k.shape[:-2])  # B h_kv: one K/V head per row block
    alpha = (scale if scale is not None else d**-0.5) / softcap
    rows = q.reshape(n, -1, d)  # (B h_kv, g T, d): the g query heads of a K/V head stacked
    keys = k.reshape(n, s, d).transpose(-2, -1)  # (B h_kv, d, S)
    scores = torch.baddbmm(rows.new_zeros(()).expand(1, 1, s), rows, keys, beta=0.0, alpha=alpha)
    scores = scores.view(*q.shape[:-1], s).tanh_() * softcap  # (B, h, T, S), |s| < softcap
    dead = None  # query rows that see no key (a padded query's, a window of pads): as SDPA, 0
    if is_causal:
        attn_mask = causal_mask(t, s, 0, q.device)  # (T, S)
    elif attn_mask is not None and attn_mask.dtype == torch.bool:
        dead = ~attn_mask.any(-1, keepdim=True)  # (.., T, 1)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        scores = scores.masked_fill_(~attn_mask, torch.finfo(scores.dtype).min)  # finite: no NaN
    elif attn_mask is not None:
        scores = scores + attn_mask
    weights = scores.softmax(-1, dtype=torch.float32).to(q.dtype)  # (B, h, T, S)
    if dead is not None:
        weights = weights.masked_fill(dead, 0.0)
    weights = F.dropout(weights, dropout).view(n, -1, s)  # (B h_kv, g T, S)
    out = torch.bmm(weights, v.reshape(n, s, dv))  # (B h_kv, g T, dv)
    return out.view(*q.shape[:-1], dv)  # (B, h, T, dv)


Bias = bool | tuple[bool, bool, bool, bool]
QKNorm = tuple[str, bool, float, float]  # ("rms" | "layer", per head, eps, rms gain offset)


class MultiHeadAttention(nn.Module):
    """``MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O`` with
    ``head_i = Attention(Q W_i^Q, K W_g(i)^K, V W_g(i)^V)``, g(i) = i // (h / num_kv_heads).

    Inputs: query (B, T, E), key (B, S, kdim), value (B, S, vdim), key_padding_mask (B, S) bool,
    True = ignore that key (as in ``torch.nn.MultiheadAttention``); ``mask`` bool (True = take
    part, as torch's SDPA) or additive, and ``score_bias`` additive, each broadcasting to the
    scores (B, h, T, S). Output: (B, T, E).
    ``causal`` masks key j > query i (top-left aligned, as ``is_causal`` in torch); ``window``
    (with ``causal``) also masks keys ``window`` or more positions back. ``rope`` rotates q and
    k (per head, positions 0..T-1 and 0..S-1) before the scores; its tables are the ``rotary``
    submodule's non-persistent buffers. ``head_dim`` (default E / h) and ``v_head_dim``
    (default ``head_dim``) size the heads; ``bias`` is one bool or (q, k, v, out);
    ``qk_norm`` = (kind, per_head, eps, offset) normalizes q and k (RMS or layer norm, over each
    head or the whole projection; an RMS gain of offset + weight, Gemma 3) before RoPE;
    ``scale`` replaces 1/sqrt(head_dim); ``softcap`` bounds the scores by
    ``softcap * tanh(scores / softcap)`` (Gemma 2). ``qkv_name`` replaces q_proj, k_proj and
    v_proj by one projection of that name whose rows are q, then k, then v (Phi-3's
    ``qkv_proj``) or, with ``qkv_layout="per_head"``, q_i, k_i, v_i head by head (GPT-NeoX's
    ``query_key_value``), for self-attention.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: Bias = True,
        kdim: int | None = None,
        vdim: int | None = None,
        causal: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        num_kv_heads: int | None = None,
        window: int = 0,
        rope: RopeConfig | None = None,
        head_dim: int | None = None,
        v_head_dim: int | None = None,
        qk_norm: QKNorm | None = None,
        scale: float | None = None,
        softcap: float | None = None,
        out_name: str = "out_proj",
        qkv_name: str | None = None,
        qkv_layout: str = "stacked",
        in_proj: bool = False,
        batch_first: bool = True,
        transposed: bool = False,
        names: tuple[str | None, ...] = ("q_proj", "k_proj", "v_proj"),
        relative_position_bias: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if head_dim is None and embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads % kv_heads != 0:
            raise ValueError(f"num_kv_heads {kv_heads} does not divide num_heads {num_heads}")
        if window and not causal:
            raise ValueError("a sliding window needs causal attention")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.bias = bias
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.dropout = dropout
        self.causal = causal
        self.window = window
        self.rope = rope
        self.head_dim = head_dim if head_dim is not None else embed_dim // num_heads  # d_k
        self.v_head_dim = v_head_dim if v_head_dim is not None else self.head_dim  # d_v
        self.qk_norm = qk_norm
        self.scale = scale
        self.softcap = softcap
        self._kv_heads = kv_heads
        bq, bk, bv, bo = bias if isinstance(bias, tuple) else (bias,) * 4
        q_dim, k_dim = num_heads * self.head_dim, kv_heads * self.head_dim
        v_dim = kv_heads * self.v_head_dim
        self.qkv_name = qkv_name  # one fused (q; k; v) projection of that name (Phi-3)
        self._widths = (q_dim, k_dim, v_dim)
        self.qkv_per_head = qkv_layout == "per_head"  # rows q_i, k_i, v_i head by head (GPT-NeoX)
        self.batch_first = batch_first  # false: (T, B, E) in and out
        self.in_proj = in_proj  # torch's packed in_proj_weight, in_proj_bias (any q, k, v)
        linear: Any = TransposedLinear if transposed else nn.Linear  # GPT-2's Conv1D: (in, out)
        if qkv_name is not None:
            fused = linear(embed_dim, q_dim + k_dim + v_dim, bias=bq, **factory)
            setattr(self, qkv_name, fused)
        # the projections' names (BERT: query, key, value); a fourth None: no output projection
        self._names: tuple[str, str, str] = names[:3]  # type: ignore[assignment]
        self.out_proj_used = len(names) < 4 or names[3] is not None
        if in_proj and qkv_name is None:  # as torch.nn.MultiheadAttention: xavier rows, zero bias
            rows = q_dim + k_dim + v_dim
            self.in_proj_weight = nn.Parameter(torch.empty(rows, embed_dim, **factory))
            self.in_proj_bias = nn.Parameter(torch.zeros(rows, **factory)) if bq else None
            nn.init.xavier_uniform_(self.in_proj_weight)
        elif qkv_name is None:
            for name, fan_in, width, biased in zip(
                self._names,
                (embed_dim, self.kdim, self.vdim),
                (q_dim, k_dim, v_dim),
                (bq, bk, bv),
                strict=True,
            ):
                setattr(self, name, linear(fan_in, width, bias=biased, **factory))
        self.out_name = out_name  # transformers' Llama family: o_proj
        if self.out_proj_used:
            out = linear(num_heads * self.v_head_dim, embed_dim, bias=bo, **factory)
            setattr(self, out_name, out)
        self.q_norm: Any = None  # nn.RMSNorm or nn.LayerNorm, with qk_norm
        self.k_norm: Any = None
        # where q and k are normalized: over the whole projection (OLMo-2) or each head (Qwen3)
        self.norm_whole = qk_norm is not None and not qk_norm[1]
        self.norm_heads = qk_norm is not None and qk_norm[1]
        if qk_norm is not None:
            kind, per_head, eps, offset = qk_norm
            norm: Any = nn.RMSNorm if kind == "rms" else nn.LayerNorm
            if offset:  # Gemma 3: a (1 + w) gain in float32
                norm = functools.partial(OffsetRMSNorm, offset=offset)
            q_n, k_n = (self.head_dim,) * 2 if per_head else (q_dim, k_dim)
            self.q_norm = norm(q_n, eps=eps, **factory)
            self.k_norm = norm(k_n, eps=eps, **factory)
        self.rotary = RotaryEmbedding(self.head_dim, *rope, **factory) if rope else None
        # Swin's table of window offsets, added to the scores (transformers 5's SwinAttention)
        self.relative_position_bias = (
            SwinRelativePositionBias(relative_position_bias, num_heads, **factory)
            if relative_position_bias is not None
            else None
        )
        self.kv_cache: LayerKV | CrossKV | None = None  # set while a KVCache is bound (kv_cache.py)

    def _split_heads(self, x: Tensor, heads: int, size: int) -> Tensor:
        # (B, L, heads * size) -> (B, L, heads, size) -> (B, heads, L, size)
        return x.unflatten(-1, (heads, size)).transpose(1, 2)

    def _heads(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q (B, h, T, d_k), k (B, h_kv, S, d_k), v (B, h_kv, S, d_v), normalized, not rotated."""
        if self.qkv_name is not None:
            if key is not query or value is not query:
                raise RuntimeError("a fused qkv projection takes self-attention only")
            qkv = getattr(self, self.qkv_name)(query)  # (B, T, (h + 2 h_kv) * d)
            if self.qkv_per_head:  # (B, T, h, 3 d) -> 3 x (B, T, h, d) -> 3 x (B, T, h d)
                parts = qkv.unflatten(-1, (self.num_heads, -1)).chunk(3, -1)
                q, k, value = (p.flatten(-2) for p in parts)
            else:
                q, k, value = qkv.split(self._widths, -1)
        elif self.in_proj:  # rows q, k, v of one packed weight, each on its own input
            wq, wk, wv = self.in_proj_weight.split(self._widths)
            bq, bk, bv = (
                self.in_proj_bias.split(self._widths)
                if self.in_proj_bias is not None
                else (None, None, None)
            )
            q, k = F.linear(query, wq, bq), F.linear(key, wk, bk)  # (B, T, h d_k), (B, S, ..)
            value = F.linear(value, wv, bv)  # (B, S, h_kv * d_v)
        else:
            q, k = self._proj(0, query), self._proj(1, key)  # (B, T, h d_k), (B, S, h_kv d_k)
            value = self._proj(2, value)  # (B, S, h_kv * d_v)
        if self.norm_whole:
            q, k = self.q_norm(q), self.k_norm(k)  # over the whole projection (OLMo-2)
        q = self._split_heads(q, self.num_heads, self.head_dim)  # (B, h, T, d_k)
        k = self._split_heads(k, self._kv_heads, self.head_dim)  # (B, h_kv, S, d_k)
        v = self._split_heads(value, self._kv_heads, self.v_head_dim)  # (B, h_kv, S, d_v)
        if self.norm_heads:
            q, k = self.q_norm(q), self.k_norm(k)  # over each head (Qwen3)
        return q, k, v

    def _merge(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Any, is_causal: bool) -> Tensor:
        # Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + mask) V
        drop = self.dropout if self.training else 0.0
        gqa = self._kv_heads != self.num_heads
        out = attend(q, k, v, attn_mask, is_causal, drop, self.scale, self.softcap, gqa)
        out = out.transpose(1, 2).flatten(-2)  # (B, h, T, d_v) -> (B, T, h * d_v)
        if not self.out_proj_used:
            return out  # (B, T, h * d_v): BERT's output projection is the next module's
        return getattr(self, self.out_name)(out)  # (B, T, E)

    def _proj(self, i: int, x: Tensor) -> Tensor:
        """Projection i (q, k, v) of x, by its name."""
        return getattr(self, self._names[i])(x)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        mask: Tensor | None = None,
        score_bias: Tensor | None = None,
    ) -> Tensor:
        if self.relative_position_bias is not None:  # (1, h, N, N) over the windows
            table = self.relative_position_bias()
            score_bias = table if score_bias is None else score_bias + table
        if self.batch_first:
            return self._forward(query, key, value, key_padding_mask, mask, score_bias)
        if self.kv_cache is not None:
            raise RuntimeError("a KV cache needs batch-first attention")
        q = query.transpose(0, 1)  # (T, B, E) -> (B, T, E), as torch's batch_first=False
        k = q if key is query else key.transpose(0, 1)  # (B, S, kdim)
        v = k if value is key else q if value is query else value.transpose(0, 1)
        out = self._forward(q, k, v, key_padding_mask, mask, score_bias)  # (B, T, E)
        return out.transpose(0, 1)  # (T, B, E)

    def _forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        mask: Tensor | None = None,
        score_bias: Tensor | None = None,
    ) -> Tensor:
        # Every branch below is on constructor arguments, on whether an argument is given, or
        # on whether a cache is bound.
        if isinstance(self.kv_cache, CrossKV):  # keys and values of the encoder's output
            if score_bias is not None:
                raise RuntimeError("cached cross-attention takes no score bias")
            return self._forward_cross(query, key, value, key_padding_mask, mask, self.kv_cache)
        if self.kv_cache is not None:
            if key is not query or value is not query:
                raise RuntimeError("a KV cache needs self-attention (query, key, value the same)")
            if key_padding_mask is not None or mask is not None:
                raise RuntimeError("a KV cache takes no extra attention masks")
            return self._forward_cached(query, self.kv_cache, score_bias)
        q, k, v = self._heads(query, key, value)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)  # RoPE(q), RoPE(k): same shapes
        attn_mask, is_causal = score_mask(
            q, k, self.causal, self.window, key_padding_mask, mask, score_bias
        )
        return self._merge(q, k, v, attn_mask, is_causal)

    def _forward_cached(self, x: Tensor, cache: LayerKV, score_bias: Tensor | None) -> Tensor:
        """Self-attention of the new tokens x (B, T, E) to the cached ones and themselves;
        ``score_bias`` (1 or B, h, T, S) covers the keys the cache gives (T5's relative bias
        at the cache's positions)."""
        q, k, v = self._heads(x, x, x)
        state = cache.state
        if self.rotary is not None:  # at the tokens' positions, not 0..T-1: one table lookup
            at = state.span if state.span is not None else state.positions  # a slice: a view
            cos, sin = self.rotary.tables_at(at, q.size(-2), q.device)
            q, k = self.rotary.rotated(q, cos, sin), self.rotary.rotated(k, cos, sin)
        k, v = cache.update(k, v)  # (B, h_kv, S, d): every key the new queries may read
        attn_mask, is_causal = cache.mask(self.window)
        if score_bias is not None:
            if is_causal:  # a first forward: spell the causal pattern out
                attn_mask = causal_mask(q.size(-2), k.size(-2), 0, q.device)  # (T, S)
            if attn_mask is not None:
                score_bias = score_bias.masked_fill(~attn_mask, float("-inf"))
            attn_mask, is_causal = score_bias, False
        return self._merge(q, k, v, attn_mask, is_causal)

    def _forward_cross(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None,
        mask: Tensor | None,
        cache: CrossKV,
    ) -> Tensor:
        """Attention of the new tokens (B, T, E) to the encoder's output, whose keys and values
        the cache projects once per prompt."""
        fused = self.qkv_name is not None or self.in_proj
        if self.qk_norm is not None or self.rotary is not None or fused:
            raise RuntimeError(
                "cached cross-attention with q/k norms, RoPE or a fused qkv is not implemented"
            )
        q = self._split_heads(self._proj(0, query), self.num_heads, self.head_dim)  # (B,h,T,d_k)

        def project() -> tuple[Tensor, Tensor, Tensor | None]:
            k = self._split_heads(self._proj(1, key), self._kv_heads, self.head_dim)
            v = self._split_heads(self._proj(2, value), self._kv_heads, self.v_head_dim)
            keep, _ = score_mask(q, k, False, 0, key_padding_mask, mask)
            if keep is not None and keep.dim() == 4 and keep.size(-2) != 1:
                raise RuntimeError("cached cross-attention needs one mask for every query")
            return k, v, keep  # (B, h_kv, S, d_k), (B, h_kv, S, d_v), (.., 1, S)

        k, v, attn_mask = cache.read(project)
        return self._merge(q, k, v, attn_mask, False)

    def extra_repr(self) -> str:
        extra = f", num_kv_heads={self._kv_heads}" if self._kv_heads != self.num_heads else ""
        extra += f", window={self.window}" if self.window else ""
        if self.head_dim * self.num_heads != self.embed_dim or self.v_head_dim != self.head_dim:
            extra += f", head_dim={self.head_dim}, v_head_dim={self.v_head_dim}"
        extra += f", scale={self.scale}" if self.scale is not None else ""
        extra += f", softcap={self.softcap}" if self.softcap is not None else ""
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"dropout={self.dropout}, causal={self.causal}{extra}"
        )


class ScaledDotProductAttention(nn.Module):
    """``softmax(Q K^T * scale + mask) V`` with dropout on the weights in training mode only.

    Parameter-free; the ``scaled_dot_product_attention`` op lowers to this module where a plain
    ``F.scaled_dot_product_attention`` call cannot say it: dropout (it follows train/eval), a
    sliding ``window``, ``softcap``, or masks to combine. ``enable_gqa``: key/value have fewer
    heads than the query (dim -3), each serving a group. ``mask`` is bool (True = take part)
    or additive, ``score_bias`` additive; both broadcast to the scores (..., T, S).
    """

    def __init__(
        self,
        dropout: float = 0.0,
        causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        *,
        window: int = 0,
        softcap: float | None = None,
    ):
        super().__init__()
        self.dropout = dropout
        self.causal = causal
        self.scale = scale
        self.enable_gqa = enable_gqa
        self.window = window
        self.softcap = softcap

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        score_bias: Tensor | None = None,
    ) -> Tensor:
        # (..., T, d), (..., S, d), (..., S, dv) -> (..., T, dv)
        attn_mask, is_causal = score_mask(
            query, key, self.causal, self.window, None, mask, score_bias
        )
        drop = self.dropout if self.training else 0.0
        return attend(
            query, key, value, attn_mask, is_causal, drop, self.scale, self.softcap, self.enable_gqa
        )

    def extra_repr(self) -> str:
        gqa = ", enable_gqa=True" if self.enable_gqa else ""
        gqa += f", window={self.window}" if self.window else ""
        gqa += f", softcap={self.softcap}" if self.softcap is not None else ""
        return f"dropout={self.dropout}, causal={self.causal}, scale={self.scale}{gqa}"
