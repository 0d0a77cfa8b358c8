"""Multi-head attention (Vaswani et al., 2017) on torch's fused scaled dot-product attention.

Batch-first throughout. The projections are four ``nn.Linear`` submodules, so a state dict reads
``attn.q_proj.weight`` ... ``attn.out_proj.bias``. The forward has no data-dependent Python
branches: it traces under ``torch.compile(fullgraph=True)`` and ``torch.export``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """``MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O`` with
    ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)``.

    Inputs: query (B, T, E), key (B, S, kdim), value (B, S, vdim), key_padding_mask (B, S) bool,
    True = ignore that key (as in ``torch.nn.MultiheadAttention``). Output: (B, T, E).
    ``causal`` masks key j > query i (top-left aligned, as ``is_causal`` in torch).
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
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads  # d_k = d_v = E / h
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.dropout = dropout
        self.causal = causal
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)

    def _split_heads(self, x: Tensor) -> Tensor:
        # (B, L, E) -> (B, L, h, d_k) -> (B, h, L, d_k)
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        q = self._split_heads(self.q_proj(query))  # (B, h, T, d_k)
        k = self._split_heads(self.k_proj(key))  # (B, h, S, d_k)
        v = self._split_heads(self.v_proj(value))  # (B, h, S, d_v)
        attn_mask: Tensor | None = None  # bool, True = take part (torch SDPA's convention)
        is_causal = self.causal
        if key_padding_mask is not None:  # structural (an argument given or not), not data
            attn_mask = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
            if self.causal:  # SDPA takes is_causal or attn_mask, not both: spell causal out
                T, S = q.size(-2), k.size(-2)
                causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()  # (T, S)
                attn_mask = attn_mask & causal  # (B, 1, T, S)
                is_causal = False
        # Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # (B, h, T, d_v)
        out = out.transpose(1, 2).flatten(-2)  # (B, T, h, d_v) -> (B, T, E)
        return self.out_proj(out)  # (B, T, E)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"dropout={self.dropout}, causal={self.causal}"
        )


class ScaledDotProductAttention(nn.Module):
    """``softmax(Q K^T * scale) V`` with dropout on the weights in training mode only.

    Parameter-free; the ``scaled_dot_product_attention`` op lowers to this module only when it
    has dropout (otherwise to a plain ``F.scaled_dot_product_attention`` call).
    """

    def __init__(self, dropout: float = 0.0, causal: bool = False, scale: float | None = None):
        super().__init__()
        self.dropout = dropout
        self.causal = causal
        self.scale = scale

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        # (..., T, d), (..., S, d), (..., S, dv) -> (..., T, dv)
        return F.scaled_dot_product_attention(
            query,
            key,
            value,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal,
            scale=self.scale,
        )

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, causal={self.causal}, scale={self.scale}"
