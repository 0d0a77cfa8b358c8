"""Hand-written torch.nn modules for the import round trips (tests/test_import.py): the shipped
CNN and LSTM classifier as their authors would write them, an MLP, and a pre-norm transformer
stack whose layers sit in an nn.ModuleList."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Cnn(nn.Module):
    """specs/cnn.yaml as a module."""

    def __init__(self, classes: int = 10, hidden: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 2 * 2, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))  # (B, 8, 4, 4)
        x = self.pool(F.relu(self.conv2(x)))  # (B, 16, 2, 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


class LstmClassifier(nn.Module):
    """specs/lstm_classifier.yaml as a module."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(10, 8, num_layers=2, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, (_h, _c) = self.lstm(x)  # (B, S, 8)
        return self.fc(out[:, -1, :])


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.act = nn.GELU()
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Linear(12, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class Attention(nn.Module):
    """Single-head causal self-attention (a head split is not imported yet)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (B, T, d)
        return self.out_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True))


class FeedForward(nn.Module):
    def __init__(self, d: int, d_ff: int) -> None:
        super().__init__()
        self.up = nn.Linear(d, d_ff)
        self.down = nn.Linear(d_ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up(x)))


class Layer(nn.Module):
    def __init__(self, d: int, d_ff: int) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(d, eps=1e-6)
        self.attn = Attention(d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = FeedForward(d, d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class TinyLM(nn.Module):
    """Embedding, three pre-norm layers in a ModuleList, final norm, LM head."""

    def __init__(self, vocab: int = 20, d: int = 8, layers: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Layer(d, 2 * d) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)  # (B, T, d)
        for layer in self.layers:
            h = layer(h)
        return self.lm_head(self.norm(h))


class Spectral(nn.Module):
    """Two calls archcomp has no op for."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.fft.fft(x).abs()
        z = torch.cumprod(y, dim=-1)
        return self.fc(z)


class Assorted(nn.Module):
    """A GRU, batch norm, pooling, scalars on either side and a concat."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 5, batch_first=True)
        self.conv = nn.Conv1d(5, 4, 3, stride=2, bias=False)
        self.norm = nn.BatchNorm1d(4)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = self.gru(x)  # (B, S, 5), (1, B, 5)
        y = self.norm(self.conv(out.transpose(1, 2)))  # (B, 4, L)
        y = 1.0 - self.pool(torch.tanh(y)).flatten(1) / 2  # (B, 4)
        return self.fc(torch.cat([y, h[0]], dim=-1))


class Token(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.token


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.proj(x)
        return y if mask is None else y * mask


class Defaults(nn.Module):
    """Optional arguments left at their defaults, at the top and in a child; ``**kwargs``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        return self.gate(x, mask=None) + 1


class SequentialStack(nn.Module):
    """Equal layers in an nn.Sequential, and equal Linears in another."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(Layer(d, 2 * d) for _ in range(2)))
        self.head = nn.Sequential(nn.Linear(d, d), nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(x))


class MaskedAttention(nn.Module):
    """nn.MultiheadAttention with an attn_mask input (a float one is added to the scores)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]
