"""Sizes of an imported transformers model as params named after its config (``hidden_size``,
``num_hidden_layers``, ...): a literal becomes ``${field}`` where it sits in an argument that
field sizes and equals the field's value, so the spec computes what it did. Each block that
uses a param (itself or through the blocks it calls) declares it, and each call passes it on,
since a block sees only its own params."""

from __future__ import annotations

import re
from typing import Any

Body = dict[str, Any]
# (op, argument path) -> the config fields that may size it, first match wins
SLOTS: dict[tuple[str, tuple[str | int, ...]], tuple[str, ...]] = {
    ("embedding", ("num_embeddings",)): ("vocab_size",),
    ("embedding", ("embedding_dim",)): ("hidden_size",),
    ("linear", ("out_features",)): ("intermediate_size", "hidden_size", "vocab_size"),
    ("multi_head_attention", ("num_heads",)): ("num_attention_heads",),
    ("multi_head_attention", ("num_kv_heads",)): ("num_key_value_heads",),
    ("multi_head_attention", ("head_dim",)): ("head_dim",),
    ("multi_head_attention", ("window",)): ("sliding_window",),
    ("multi_head_attention", ("rope", "theta")): ("rope_theta",),
    ("multi_head_attention", ("rope", "max_len")): ("max_position_embeddings",),
    ("multi_head_attention", ("qk_norm", "eps")): ("rms_norm_eps",),
    ("rms_norm", ("eps",)): ("rms_norm_eps", "layer_norm_epsilon"),
    ("learned_positional_encoding", ("max_len",)): ("max_position_embeddings",),
    ("parameter", ("shape", 0)): ("vocab_size",),  # a shared embedding no forward calls
    ("parameter", ("shape", 1)): ("hidden_size",),
    ("buffer", ("shape", 1)): ("vocab_size",),  # BART's final_logits_bias [1, vocab_size]
    ("mixture_of_experts", ("num_experts",)): ("n_routed_experts", "num_local_experts"),
    ("mixture_of_experts", ("top_k",)): ("num_experts_per_tok",),
    ("mixture_of_experts", ("expert_features",)): ("intermediate_size", "moe_intermediate_size"),
    ("mixture_of_experts", ("num_groups",)): ("n_group",),
    ("mixture_of_experts", ("top_groups",)): ("topk_group",),
    ("mixture_of_experts", ("routed_scaling_factor",)): ("routed_scaling_factor",),
    ("mixture_of_experts", ("shared_features",)): ("moe_intermediate_size",),
    **{("multi_head_latent_attention", (k,)): (k,) for k in ("q_lora_rank", "kv_lora_rank")},
    **{("multi_head_latent_attention", (k,)): (k,) for k in ("qk_nope_head_dim", "v_head_dim")},
    ("multi_head_latent_attention", ("qk_rope_head_dim",)): ("qk_rope_head_dim",),
    ("multi_head_latent_attention", ("num_heads",)): ("num_attention_heads",),
    ("multi_head_latent_attention", ("rope", "theta")): ("rope_theta",),
    ("multi_head_latent_attention", ("rope", "max_len")): ("max_position_embeddings",),
}
ORDER = (  # the order params are declared and passed in
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_decoder_layers",  # T5's decoder depth
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rope_theta",
    "rms_norm_eps",
    "sliding_window",
    "num_local_experts",
    "n_routed_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "state_size",  # Mamba's, named by the mixer's body itself (archcomp/importer/mamba.py)
    "conv_kernel",
    "time_step_rank",
    "layer_norm_epsilon",
    "n_group",
    "topk_group",
    "routed_scaling_factor",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
)
RMS_EPS = 1e-6  # rms_norm's default: written out where the config names it


def config_values(config: Any) -> dict[str, Any]:
    """The config's fields that size a spec (``rope_theta`` from ``rope_parameters``)."""
    out = {f: getattr(config, f, None) for f in ORDER}
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
    if isinstance(getattr(config, "depths", None), list | tuple):  # ConvNeXt's, Swin's stages:
        out.pop("num_hidden_layers")  # it counts the stages, no repeat's copies (len(depths))
    return {k: v for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def name_params(blocks: dict[str, Body], body: Body, values: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``blocks`` and ``body`` in place; the spec's params (those it uses)."""
    used: dict[str, set[str]] = {}
    for name, b in blocks.items():  # innermost first: a block's callees are named before it
        used[name] = _body(b, values, used) | _written(b["nodes"], values)
        if used[name]:  # after any a merged block has (alternating.py)
            b["params"] = {p: values[p] for p in ORDER if p in used[name]} | b.get("params", {})
    top = _body(body, values, used)
    return {p: values[p] for p in values if p in top}


def _body(b: Body, values: dict[str, Any], used: dict[str, set[str]]) -> set[str]:
    mine: set[str] = set()
    for i, node in enumerate(b["nodes"]):
        op = node["op"]
        fixed = node.pop("_fixed", False)  # sizes no config field gives (T5's h * d_kv)
        if op == "rms_norm" and "eps" not in node and values.get("rms_norm_eps") == RMS_EPS:
            node["eps"] = RMS_EPS
        for (slot_op, path), fields in SLOTS.items():
            if slot_op == op and not fixed:
                mine |= _name(node, path, fields, values)
        count = node.pop("_count", "num_hidden_layers")  # the field counting this repeat
        if not fixed and "repeat" in node and node["repeat"] == values.get(count):
            node["repeat"] = f"${{{count}}}"
            mine.add(count)
        if used.get(op):
            b["nodes"][i] = node | {p: f"${{{p}}}" for p in ORDER if p in used[op]}
            mine |= used[op]
    return mine


def _written(v: Any, values: dict[str, Any]) -> set[str]:
    """The config fields that the body's expressions name already (``${2 * intermediate_size}``:
    Mamba's mixer, written in its config's names)."""
    if isinstance(v, dict):
        return set().union(*(_written(x, values) for x in v.values())) if v else set()
    if isinstance(v, list):
        return set().union(*(_written(x, values) for x in v)) if v else set()
    if not isinstance(v, str) or "${" not in v:
        return set()
    return {w for e in re.findall(r"\$\{([^}]*)\}", v) for w in re.findall(r"\w+", e)} & set(values)


def _name(
    node: dict[str, Any],
    path: tuple[str | int, ...],
    fields: tuple[str, ...],
    values: dict[str, Any],
) -> set[str]:
    holder: Any = node
    for key in path[:-1]:
        holder = holder.get(key) if isinstance(holder, dict) else None
    last = path[-1]
    listed = isinstance(holder, list) and isinstance(last, int) and last < len(holder)
    if not listed and (not isinstance(holder, dict) or last not in holder):
        return set()
    for f in fields:
        v = holder[last]
        if (
            f in values
            and not isinstance(v, bool)
            and isinstance(v, int | float)
            and v == values[f]
        ):
            holder[last] = f"${{{f}}}"
            return {f}
    return set()
