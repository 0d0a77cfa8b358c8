"""Mixture of experts: a top-k router and E feed-forward experts that each run only on the
tokens routed to them (Mixtral, DeepSeek-V3, Qwen-MoE, OLMoE).

Route, sort the (token, slot) pairs by expert, run each expert once on its contiguous rows,
scale by the routing weights and scatter-add back (torchtitan's ``models/moe``). The experts'
weights are one stacked tensor each, as transformers' Mixtral stores them: ``gate_up_proj``
(E, 2F, d) (gate rows first, then up), or ``up_proj`` (E, F, d) for an ungated MLP, and
``down_proj`` (E, d, F).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archcomp.nn.grouped_experts import ACTIVATIONS, grouped_experts


def _uniform_(w: Tensor, fan_in: int) -> None:
    """nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1 / math.sqrt(fan_in)
    nn.init.uniform_(w, -bound, bound)


class TopKRouter(nn.Module):
    """Scores E experts per token and keeps the top k.

    ``scores = softmax(x W^T + b)`` (Mixtral) or ``sigmoid(...)`` (DeepSeek-V3). The choice
    ranks ``scores + e_score_correction_bias`` (a buffer, DeepSeek-V3's aux-loss-free balance)
    within the ``top_groups`` best of ``num_groups`` expert groups (a group scores the sum of
    its best two); the weights are the chosen experts' ``scores``, renormalized to sum to 1
    when ``renormalize``, times ``routed_scaling_factor``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        scoring: str = "softmax",
        renormalize: bool = True,
        num_groups: int = 1,
        top_groups: int = 1,
        score_correction_bias: bool = False,
        routed_scaling_factor: float = 1.0,
        bias: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.hidden_size, self.num_experts, self.top_k = hidden_size, num_experts, top_k
        self.scoring, self.renormalize = scoring, renormalize
        self.num_groups, self.top_groups = num_groups, top_groups
        self.routed_scaling_factor = routed_scaling_factor
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size, **factory))
        self.bias = nn.Parameter(torch.empty(num_experts, **factory)) if bias else None
        # persistent: DeepSeek-V3 checkpoints hold it
        bias_buffer = torch.empty(num_experts, **factory) if score_correction_bias else None
        self.register_buffer("e_score_correction_bias", bias_buffer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight.is_meta:  # no values to draw
            return
        _uniform_(self.weight, self.hidden_size)
        if self.bias is not None:
            _uniform_(self.bias, self.hidden_size)
        if isinstance(self.e_score_correction_bias, Tensor):
            nn.init.zeros_(self.e_score_correction_bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (N, d) -> (weights (N, k) in x's dtype, experts (N, k) int64, probabilities (N, E)
        in float32 for the load-balancing loss)."""
        logits = F.linear(x, self.weight, self.bias).float()  # (N, E)
        scores = logits.softmax(-1) if self.scoring == "softmax" else logits.sigmoid()
        choice = scores.detach()  # the choice is data: no gradient flows through top-k
        if isinstance(self.e_score_correction_bias, Tensor):
            choice = choice + self.e_score_correction_bias.float()
        if self.num_groups > 1:
            choice = self._within_top_groups(choice)
        experts = choice.topk(self.top_k, dim=-1, sorted=False).indices  # (N, k)
        weights = scores.gather(1, experts)  # (N, k)
        if self.renormalize:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        weights = weights * self.routed_scaling_factor
        probs = scores if self.scoring == "softmax" else scores / scores.sum(-1, keepdim=True)
        return weights.to(x.dtype), experts, probs

    def _within_top_groups(self, choice: Tensor) -> Tensor:
        """-inf for every expert outside the ``top_groups`` groups whose best two scores sum
        highest (DeepSeek-V3's ``n_group``/``topk_group``)."""
        n = choice.shape[0]
        per_group = self.num_experts // self.num_groups
        grouped = choice.view(n, self.num_groups, per_group)  # (N, G, E/G)
        group_scores = grouped.topk(min(2, per_group), dim=-1).values.sum(-1)  # (N, G)
        best = group_scores.topk(self.top_groups, dim=-1, sorted=False).indices  # (N, g)
        chosen = torch.ones_like(best, dtype=torch.bool)  # jit.trace cannot scatter a scalar
        keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter(1, best, chosen)
        return grouped.masked_fill(~keep[..., None], -math.inf).view(n, self.num_experts)

    def extra_repr(self) -> str:
        return (
            f"{self.hidden_size}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"scoring={self.scoring}, renormalize={self.renormalize}"
        )


class GroupedExperts(nn.Module):
    """E feed-forward networks with stacked weights; ``forward`` runs expert e on its rows
    only. Gated: ``down(act(gate x) * up x)`` (SwiGLU with silu, GeGLU with gelu); otherwise
    ``down(act(up x))``."""

    def __init__(
        self,
        num_experts: int,
        hidden_size: int,
        expert_features: int,
        gated: bool = True,
        activation: str = "silu",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.num_experts, self.hidden_size = num_experts, hidden_size
        self.expert_features, self.gated, self.activation = expert_features, gated, activation
        self.act = ACTIVATIONS[activation]
        factory = {"device": device, "dtype": dtype}
        rows = 2 * expert_features if gated else expert_features
        up = nn.Parameter(torch.empty(num_experts, rows, hidden_size, **factory))
        if gated:
            self.gate_up_proj = up  # (E, 2F, d): gate rows, then up rows
        else:
            self.up_proj = up  # (E, F, d)
        self.down_proj = nn.Parameter(
            torch.empty(num_experts, hidden_size, expert_features, **factory)
        )  # (E, d, F)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.down_proj.is_meta:  # no values to draw
            return
        _uniform_(self.gate_up_proj if self.gated else self.up_proj, self.hidden_size)
        _uniform_(self.down_proj, self.expert_features)

    def forward(self, x: Tensor, counts: Tensor) -> Tensor:
        """x (M, d), rows sorted by expert, ``counts[e]`` (E,) rows for expert e -> (M, d)."""
        up = self.gate_up_proj if self.gated else self.up_proj  # (E, 2F|F, d)
        return grouped_experts(x, counts, up, self.down_proj, self.gated, self.activation)

    def extra_repr(self) -> str:
        return (
            f"{self.num_experts}, {self.hidden_size}, {self.expert_features}, "
            f"gated={self.gated}, activation={self.activation}"
        )


class FeedForward(nn.Module):
    """One dense expert (the shared experts): ``down_proj(act(gate_proj x) * up_proj x)``, or
    ``down_proj(act(up_proj x))`` ungated; no biases (DeepSeek-V3's and Qwen-MoE's MLP)."""

    def __init__(
        self,
        hidden_size: int,
        features: int,
        gated: bool = True,
        activation: str = "silu",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.hidden_size, self.features = hidden_size, features
        self.gated, self.activation = gated, activation
        self.act = ACTIVATIONS[activation]
        factory = {"device": device, "dtype": dtype}
        if gated:
            self.gate_proj = nn.Linear(hidden_size, features, bias=False, **factory)
        self.up_proj = nn.Linear(hidden_size, features, bias=False, **factory)
        self.down_proj = nn.Linear(features, hidden_size, bias=False, **factory)

    def forward(self, x: Tensor) -> Tensor:
        h = (
            self.act(self.gate_proj(x)) * self.up_proj(x)
            if self.gated
            else self.act(self.up_proj(x))
        )
        return self.down_proj(h)  # (..., d)


class MixtureOfExperts(nn.Module):
    """x (..., d) -> (y (..., d), load-balancing loss ()).

    Each token runs its ``top_k`` of ``num_experts`` routed experts (:class:`TopKRouter`,
    :class:`GroupedExperts`), their outputs summed with the routing weights; plus, with
    ``shared_features``, one dense expert of that width on every token (DeepSeek-V3's
    ``shared_experts``), scaled by ``sigmoid(shared_expert_gate x)`` with ``shared_gate``
    (Qwen-MoE). The loss is Switch's and Mixtral's ``E * sum_e f_e P_e``: f_e the fraction of
    the N*k choices that picked expert e, P_e the mean routing probability of e.
    """

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        expert_features: int,
        gated: bool = True,
        activation: str = "silu",
        scoring: str = "softmax",
        renormalize: bool = True,
        num_groups: int = 1,
        top_groups: int = 1,
        score_correction_bias: bool = False,
        routed_scaling_factor: float = 1.0,
        router_bias: bool = False,
        shared_features: int = 0,
        shared_gate: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.hidden_size, self.num_experts, self.top_k = hidden_size, num_experts, top_k
        self.expert_features, self.gated, self.activation = expert_features, gated, activation
        self.scoring, self.renormalize = scoring, renormalize
        self.num_groups, self.top_groups = num_groups, top_groups
        self.score_correction_bias = score_correction_bias
        self.routed_scaling_factor, self.router_bias = routed_scaling_factor, router_bias
        self.shared_features, self.shared_gate = shared_features, shared_gate
        factory = {"device": device, "dtype": dtype}
        self.gate = TopKRouter(
            hidden_size, num_experts, top_k, scoring, renormalize, num_groups, top_groups,
            score_correction_bias, routed_scaling_factor, router_bias, **factory,
        )  # fmt: skip
        self.experts = GroupedExperts(
            num_experts, hidden_size, expert_features, gated, activation, **factory
        )
        self.shared_experts = (
            FeedForward(hidden_size, shared_features, gated, activation, **factory)
            if shared_features
            else None
        )
        self.shared_expert_gate = (
            nn.Linear(hidden_size, 1, bias=False, **factory) if shared_gate else None
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        tokens = x.reshape(-1, self.hidden_size)  # (N, d)
        weights, experts, probs = self.gate(tokens)  # (N, k), (N, k), (N, E)
        flat = experts.flatten()  # (N k,): slot i of token t at t * k + i
        order = flat.argsort(stable=True)  # (N k,) slots grouped by expert
        counts = torch.zeros(self.num_experts, dtype=flat.dtype, device=flat.device)
        counts = counts.index_add(0, flat, torch.ones_like(flat))  # (E,): static shape
        token_of = order // self.top_k  # (N k,) the token of each sorted slot
        # the tokens per expert are data: only the opaque grouped_experts op splits by them,
        # so torch.compile(fullgraph=True) and torch.export trace the whole forward
        y = self.experts(tokens[token_of], counts)  # (N k, d), by expert
        y = y * weights.flatten()[order, None]  # (N k, d)
        out = torch.zeros_like(tokens).index_add_(0, token_of, y)  # (N, d)
        if self.shared_experts is not None:
            shared = self.shared_experts(tokens)  # (N, d)
            if self.shared_expert_gate is not None:
                shared = torch.sigmoid(self.shared_expert_gate(tokens)) * shared
            out = out + shared
        fraction = counts.float() / tokens.shape[0]  # (E,) f_e, summing to k
        loss = self.num_experts * (fraction * probs.mean(0)).sum()  # ()
        return out.view(x.shape), loss.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, num_experts={self.num_experts}, top_k={self.top_k}"
