"""Multi-head latent attention (MLA; DeepSeek-V2, DeepSeek-AI 2024, and DeepSeek-V3), on torch's
fused scaled dot-product attention.

Keys and values come from one low-rank latent per token, ``c^KV = RMSNorm(x W^DKV)`` of
``kv_lora_rank`` dims, expanded per head by ``W^UK`` and ``W^UV`` (one matrix, ``kv_b_proj``).
RoPE cannot pass through that expansion, so position travels in a decoupled head:
``qk_rope_head_dim`` more dims of each query head and one rotated key ``k^R`` shared by all
heads, projected beside the latent (``kv_a_proj_with_mqa``). Queries are projected directly
(``q_proj``) or through their own low-rank latent (``q_a_proj``, ``q_a_layernorm``,
``q_b_proj``). The submodules carry DeepSeek's checkpoint names, so a state dict reads
``self_attn.kv_a_proj_with_mqa.weight`` as theirs does.

A KV cache needs only the latent and the rotated shared key per token:
``(kv_lora_rank + qk_rope_head_dim)`` numbers instead of ``num_heads * (d_k + d_v)``; that is
what :class:`~archcomp.nn.cache_state.LatentKV` keeps, and decoding absorbs the expansion into
the queries and the output.

The forward has no data-dependent Python branches: it traces under
``torch.compile(fullgraph=True)`` and ``torch.export``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from archcomp.nn.attention import attend, score_mask
from archcomp.nn.cache_state import LatentKV
from archcomp.nn.rotary import RopeConfig, RotaryEmbedding


class MultiHeadLatentAttention(nn.Module):
    """``o_t = W^O [softmax(q_t,i^T k_j,i * scale) v_j,i]_i`` with, per head i,
    ``q_t,i = [q^C_t,i ; RoPE(q^R_t,i)]``, ``k_j,i = [W^UK_i c^KV_j ; RoPE(k^R_j)]``,
    ``v_j,i = W^UV_i c^KV_j`` and ``c^KV_j = RMSNorm(W^DKV x_j)``.

    Input x (B, T, E); optional ``mask``, bool (True = take part) or additive, broadcasting to
    the scores (B, h, T, T). Output (B, T, E). ``q_lora_rank``: queries through a low-rank
    latent (None: one ``q_proj``). ``bias`` is DeepSeek's ``attention_bias``: biases on
    ``q_a_proj``, ``kv_a_proj_with_mqa`` and ``o_proj`` (never on ``q_proj``, ``q_b_proj`` or
    ``kv_b_proj``). ``scale`` replaces ``(qk_nope_head_dim + qk_rope_head_dim)^-1/2``;
    ``norm_eps`` is the two latent norms' eps; ``rope`` the decoupled head's rotary options
    (its tables are the ``rotary`` submodule's non-persistent buffers).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        kv_lora_rank: int,
        qk_nope_head_dim: int,
        qk_rope_head_dim: int,
        v_head_dim: int,
        q_lora_rank: int | None = None,
        rope: RopeConfig | None = None,
        causal: bool = False,
        bias: bool = False,
        scale: float | None = None,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.kv_lora_rank = kv_lora_rank
        self.qk_nope_head_dim = qk_nope_head_dim
        self.qk_rope_head_dim = qk_rope_head_dim
        self.v_head_dim = v_head_dim
        self.q_lora_rank = q_lora_rank
        self.rope = rope
        self.causal = causal
        self.bias = bias
        self.scale = scale
        self.norm_eps = norm_eps
        self.dropout = dropout
        h, d_qk = num_heads, qk_nope_head_dim + qk_rope_head_dim
        self.q_proj = self.q_a_proj = self.q_a_layernorm = self.q_b_proj = None
        if q_lora_rank is None:
            self.q_proj = nn.Linear(embed_dim, h * d_qk, bias=False, **factory)
        else:
            self.q_a_proj = nn.Linear(embed_dim, q_lora_rank, bias=bias, **factory)
            self.q_a_layernorm = nn.RMSNorm(q_lora_rank, eps=norm_eps, **factory)
            self.q_b_proj = nn.Linear(q_lora_rank, h * d_qk, bias=False, **factory)
        self.kv_a_proj_with_mqa = nn.Linear(
            embed_dim, kv_lora_rank + qk_rope_head_dim, bias=bias, **factory
        )
        self.kv_a_layernorm = nn.RMSNorm(kv_lora_rank, eps=norm_eps, **factory)
        self.kv_b_proj = nn.Linear(
            kv_lora_rank, h * (qk_nope_head_dim + v_head_dim), bias=False, **factory
        )
        self.o_proj = nn.Linear(h * v_head_dim, embed_dim, bias=bias, **factory)
        self.rotary = RotaryEmbedding(qk_rope_head_dim, *(rope or RopeConfig()), **factory)
        self.kv_cache: LatentKV | None = None  # set while a KVCache is bound (kv_cache.py)

    def _queries(self, x: Tensor) -> Tensor:
        """(B, T, E) -> (B, h, T, d_nope + d_rope)."""
        if self.q_proj is not None:
            q = self.q_proj(x)  # (B, T, h * (d_nope + d_rope))
        else:
            assert self.q_a_proj is not None and self.q_a_layernorm is not None
            assert self.q_b_proj is not None
            c_q = self.q_a_layernorm(self.q_a_proj(x))  # (B, T, q_lora_rank): c^Q
            q = self.q_b_proj(c_q)  # (B, T, h * (d_nope + d_rope))
        d_qk = self.qk_nope_head_dim + self.qk_rope_head_dim
        return q.unflatten(-1, (self.num_heads, d_qk)).transpose(1, 2)

    def latent(self, x: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """What a KV cache stores per token: the normalized latent c^KV (B, T, kv_lora_rank)
        and the rotated shared key RoPE(k^R) (B, 1, T, d_rope), at ``positions`` (a cache's)
        or 0..T-1."""
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split(
            [self.kv_lora_rank, self.qk_rope_head_dim], dim=-1
        )  # (B, T, kv_lora_rank), (B, T, d_rope)
        return self.kv_a_layernorm(c_kv), self.rotary(k_pe[:, None], positions)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.kv_cache is not None:  # set only while a KVCache is bound
            if mask is not None:
                raise RuntimeError("a KV cache takes no extra attention masks")
            return self._forward_cached(x, self.kv_cache)
        q_nope, q_pe = self._queries(x).split([self.qk_nope_head_dim, self.qk_rope_head_dim], -1)
        c_kv, k_pe = self.latent(x)  # (B, T, kv_lora_rank), (B, 1, T, d_rope)
        return self._expanded(q_nope, self.rotary(q_pe), c_kv, k_pe, mask, None)

    def _expanded(
        self,
        q_nope: Tensor,
        q_pe: Tensor,
        c_kv: Tensor,
        k_pe: Tensor,
        mask: Tensor | None,
        cached: tuple[Tensor | None, bool] | None,
    ) -> Tensor:
        """Attention with every head's keys and values expanded from the latents c_kv
        (B, S, r) and k_pe (B, 1, S, d_rope), for queries q_nope, q_pe (rotated)
        (B, h, T, d); ``cached``: a cache's (attn_mask, is_causal) instead of ``mask``."""
        h, d_nope = self.num_heads, self.qk_nope_head_dim
        q = torch.cat((q_nope, q_pe), dim=-1)  # (B, h, T, d_nope + d_rope)
        kv = self.kv_b_proj(c_kv).unflatten(-1, (h, d_nope + self.v_head_dim))
        k_nope, v = kv.transpose(1, 2).split([d_nope, self.v_head_dim], dim=-1)
        # k_nope (B, h, S, d_nope), v (B, h, S, d_v); k^R is shared by every head
        k = torch.cat((k_nope, k_pe.expand(-1, h, -1, -1)), dim=-1)  # (B, h, S, d_nope + d_rope)
        if cached is None:
            attn_mask, is_causal = score_mask(q, k, self.causal, 0, None, mask, None)
        else:
            attn_mask, is_causal = cached
        drop = self.dropout if self.training else 0.0
        out = attend(q, k, v, attn_mask, is_causal, drop, self.scale, None, False)  # (B,h,T,d_v)
        return self.o_proj(out.transpose(1, 2).flatten(-2))  # (B, T, h * d_v) -> (B, T, E)

    def _forward_cached(self, x: Tensor, cache: LatentKV) -> Tensor:
        """The new tokens x (B, T, E) attending to the cached latents and themselves. A first
        forward (a prompt: nothing cached before it) expands keys and values as the plain
        forward does; later ones absorb the key and value expansions into the queries and the
        output (DeepSeek-V2's inference form): each head scores
        ``(q^C_i W^UK_i) . c^KV + q^R_i . k^R`` and reads ``W^UV_i (softmax . c^KV)``, so no
        head's keys or values are formed and a step reads r + d_rope numbers a cached token."""
        st, h, d_nope, d_v = cache.state, self.num_heads, self.qk_nope_head_dim, self.v_head_dim
        q_nope, q_pe = self._queries(x).split([d_nope, self.qk_rope_head_dim], dim=-1)
        q_pe = self.rotary(q_pe, st.positions)  # (B, h, T, d_rope)
        c_kv, k_pe = self.latent(x, st.positions)  # (B, T, r), (B, 1, T, d_rope)
        c_all, k_all = cache.update(c_kv, k_pe[:, 0])  # (B, S, r), (B, S, d_rope)
        attn_mask, is_causal = st.masks[0]
        if st.first:  # the keys are the new tokens' (the first T slots)
            cut = attn_mask[..., : x.size(1)] if attn_mask is not None else None
            return self._expanded(q_nope, q_pe, c_kv, k_pe, None, (cut, is_causal))
        w = self.kv_b_proj.weight.unflatten(0, (h, d_nope + d_v))  # (h, d_nope + d_v, r)
        w_uk, w_uv = w.split([d_nope, d_v], dim=1)  # (h, d_nope, r), (h, d_v, r)
        q = torch.cat((q_nope @ w_uk, q_pe), -1)  # (B, h, T, r + d_rope)
        k = torch.cat((c_all, k_all), dim=-1)[:, None]  # (B, 1, S, r + d_rope): one shared head
        scale = self.scale if self.scale is not None else (d_nope + self.qk_rope_head_dim) ** -0.5
        drop = self.dropout if self.training else 0.0
        out = attend(q, k, c_all[:, None], attn_mask, is_causal, drop, scale, None, True)
        out = out @ w_uv.transpose(1, 2)  # (B, h, T, r) @ (h, r, d_v) -> (B, h, T, d_v)
        return self.o_proj(out.transpose(1, 2).flatten(-2))  # (B, T, h * d_v) -> (B, T, E)

    def extra_repr(self) -> str:
        q = f"q_lora_rank={self.q_lora_rank}, " if self.q_lora_rank is not None else ""
        scale = f", scale={self.scale}" if self.scale is not None else ""
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, {q}"
            f"kv_lora_rank={self.kv_lora_rank}, qk_nope_head_dim={self.qk_nope_head_dim}, "
            f"qk_rope_head_dim={self.qk_rope_head_dim}, v_head_dim={self.v_head_dim}, "
            f"causal={self.causal}{scale}"
        )
