"""RoPE's options of an imported attention from the transformers config: the plain base, a
partial rotation, and a scaled frequency rule (``rope_type`` llama3, linear, yarn, ...) as
``rope.scaling``; per layer type where the config keys them so (Gemma 3's sliding and full
attention layers)."""

from __future__ import annotations

from typing import Any

from torch import nn

# transformers' rope_parameters field -> archcomp's rope.scaling argument
_SCALING = {
    "factor": "factor",
    "original_max_position_embeddings": "original_max_len",
    "low_freq_factor": "low_freq_factor",
    "high_freq_factor": "high_freq_factor",
    "beta_fast": "beta_fast",
    "beta_slow": "beta_slow",
    "mscale": "mscale",
    "mscale_all_dim": "mscale_all_dim",
    "truncate": "truncate",
    "attention_factor": "attention_factor",
    "short_factor": "short_factor",
    "long_factor": "long_factor",
}
_TYPES = ("default", "llama3", "linear", "yarn")


def rope_options(
    model: nn.Module, cfg: Any, head_dim: int, attn: nn.Module
) -> dict[str, Any] | str:
    """``{theta, rotary_dim, max_len, scaling}`` of the rotary embedding the attention ``attn``
    applies; a reason where its rule has no archcomp equivalent."""
    rot = next((r for r in model.modules() if type(r).__name__.endswith("RotaryEmbedding")), None)
    if rot is None:
        return "rotary application without a RotaryEmbedding module"
    rcfg = getattr(rot, "config", cfg)
    params = dict(getattr(rcfg, "rope_parameters", None) or {})
    layer_type = getattr(attn, "layer_type", None)
    if layer_type in params and isinstance(params[layer_type], dict):
        params = dict(params[layer_type])  # Gemma 3: one rule per layer type
    kind = params.get("rope_type", "default")
    if kind not in _TYPES:
        return f"RoPE of rope_type {kind!r} (archcomp's import reads {', '.join(_TYPES)})"
    theta = params.get("rope_theta", getattr(rcfg, "rope_theta", 10000.0))
    rope: dict[str, Any] = {"theta": float(theta)}
    factor = params.get("partial_rotary_factor", getattr(rcfg, "partial_rotary_factor", 1.0))
    if factor not in (None, 1.0):
        rope["rotary_dim"] = int(head_dim * factor)
    rope["max_len"] = int(getattr(rcfg, "max_position_embeddings", 4096))
    if kind != "default":
        scaling: dict[str, Any] = {"type": kind}
        scaling |= {a: params[k] for k, a in _SCALING.items() if params.get(k) is not None}
        if kind == "linear":
            scaling = {"type": kind, "factor": float(scaling["factor"])}
        if kind == "yarn":
            scaling.setdefault("original_max_len", rope["max_len"])
        rope["scaling"] = scaling
    return rope
