"""Multi-head attention (Vaswani et al., 2017) on torch's fused scaled dot-product attention,
with the options of today's decoders: grouped-query attention (Ainslie et al., 2023; one K/V
head per group of query heads, 1 = multi-query), rotary position embeddings on q and k (Su et
al., 2021) and sliding-window causal attention (Mistral, Jiang et al., 2023).

Batch-first throughout. The projections are four ``nn.Linear`` submodules, so a state dict reads
``attn.q_proj.weight`` ... ``attn.out_proj.bias``. The forward has no data-dependent Python
branches: it traces under ``torch.compile(fullgraph=True)`` and ``torch.export``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archcomp.nn.rotary import RopeConfig, RotaryEmbedding


def causal_mask(q_len: int, k_len: int, window: int, device: Any) -> Tensor:
    """(T, S) bool, True = query i may attend to key j: ``j <= i``, and with a window
    ``i - j < window`` (each query sees itself and the ``window - 1`` keys before it, as
    Mistral's sliding window). Top-left aligned, as ``is_causal`` in torch."""
    i = torch.arange(q_len, device=device)[:, None]  # (T, 1)
    j = torch.arange(k_len, device=device)[None, :]  # (1, S)
    visible = j <= i  # (T, S)
    return visible & (j > i - window) if window > 0 else visible


class MultiHeadAttention(nn.Module):
    """``MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O`` with
    ``head_i = Attention(Q W_i^Q, K W_g(i)^K, V W_g(i)^V)``, g(i) = i // (h / num_kv_heads).

    Inputs: query (B, T, E), key (B, S, kdim), value (B, S, vdim), key_padding_mask (B, S) bool,
    True = ignore that key (as in ``torch.nn.MultiheadAttention``). Output: (B, T, E).
    ``causal`` masks key j > query i (top-left aligned, as ``is_causal`` in torch); ``window``
    (with ``causal``) also masks keys ``window`` or more positions back. ``rope`` rotates q and
    k (per head, positions 0..T-1 and 0..S-1) before the scores; its tables are the ``rotary``
    submodule's non-persistent buffers.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        causal: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        num_kv_heads: int | None = None,
        window: int = 0,
        rope: RopeConfig | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
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
        self.head_dim = embed_dim // num_heads  # d_k = d_v = E / h
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.dropout = dropout
        self.causal = causal
        self.window = window
        self.rope = rope
        self._kv_heads = kv_heads
        kv_dim = kv_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(self.kdim, kv_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(self.vdim, kv_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.rotary = RotaryEmbedding(self.head_dim, *rope, **factory) if rope else None

    def _split_heads(self, x: Tensor, heads: int) -> Tensor:
        # (B, L, heads * d_k) -> (B, L, heads, d_k) -> (B, heads, L, d_k)
        return x.unflatten(-1, (heads, self.head_dim)).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        q = self._split_heads(self.q_proj(query), self.num_heads)  # (B, h, T, d_k)
        k = self._split_heads(self.k_proj(key), self._kv_heads)  # (B, h_kv, S, d_k)
        v = self._split_heads(self.v_proj(value), self._kv_heads)  # (B, h_kv, S, d_v)
        if self.rotary is not None:  # structural (built with rope or not), not data
            q, k = self.rotary(q), self.rotary(k)  # RoPE(q), RoPE(k): same shapes
        # Every branch below is on constructor arguments or on whether an argument is given.
        attn_mask: Tensor | None = None  # bool, True = take part (torch SDPA's convention)
        is_causal = self.causal and not self.window
        if self.window or (self.causal and key_padding_mask is not None):
            # SDPA takes is_causal or attn_mask, not both: spell the causal pattern out
            attn_mask = causal_mask(q.size(-2), k.size(-2), self.window, q.device)  # (T, S)
            is_causal = False
        if key_padding_mask is not None:
            keep = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
            attn_mask = keep if attn_mask is None else keep & attn_mask  # (B, 1, T, S)
        # Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V; K/V heads serve their query group
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
            enable_gqa=self._kv_heads != self.num_heads,
        )  # (B, h, T, d_v)
        out = out.transpose(1, 2).flatten(-2)  # (B, T, h, d_v) -> (B, T, E)
        return self.out_proj(out)  # (B, T, E)

    def extra_repr(self) -> str:
        extra = f", num_kv_heads={self._kv_heads}" if self._kv_heads != self.num_heads else ""
        extra += f", window={self.window}" if self.window else ""
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"dropout={self.dropout}, causal={self.causal}{extra}"
        )


class ScaledDotProductAttention(nn.Module):
    """``softmax(Q K^T * scale) V`` with dropout on the weights in training mode only.

    Parameter-free; the ``scaled_dot_product_attention`` op lowers to this module only when it
    has dropout (otherwise to a plain ``F.scaled_dot_product_attention`` call). ``enable_gqa``:
    key/value have fewer heads than the query (dim -3), each serving a group.
    """

    def __init__(
        self,
        dropout: float = 0.0,
        causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ):
        super().__init__()
        self.dropout = dropout
        self.causal = causal
        self.scale = scale
        self.enable_gqa = enable_gqa

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        # (..., T, d), (..., S, d), (..., S, dv) -> (..., T, dv)
        return F.scaled_dot_product_attention(
            query,
            key,
            value,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal,
            scale=self.scale,
            enable_gqa=self.enable_gqa,
        )

    def extra_repr(self) -> str:
        gqa = ", enable_gqa=True" if self.enable_gqa else ""
        return f"dropout={self.dropout}, causal={self.causal}, scale={self.scale}{gqa}"
