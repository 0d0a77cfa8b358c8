"""The zoo's decoder families (Qwen2, Qwen3, OLMo-2, Phi-3, GPT-NeoX) as transformers models
from small random configs, offline: 2 layers, width 32, grouped-query heads where the family
has them, and every weight re-drawn (tests/lowering.py's ``redraw``: no norm left at 1, no bias
at 0), so a weight that loads into the wrong place cannot hide.

``config(name, **kw)`` gives the family's transformers config (``attn_implementation`` and the
like by keyword), ``FLAGSHIP`` the published size each spec's defaults reproduce.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

import torch
from hf_models import Family
from lowering import redraw


def _rope(theta: float) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": theta}


_GQA = {  # Llama-like: grouped-query heads, RMSNorm
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 48,
    "vocab_size": 61,
    "max_position_embeddings": 16,
    "rms_norm_eps": 1e-6,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "pad_token_id": 0,
}
_NEOX = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "vocab_size": 61,
    "max_position_embeddings": 16,
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 0,
    # half of each 8-dim head rotates: 4 dims, so a wrong pairing of them shows
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5},
}
# per family: (transformers' prefix of Config / ForCausalLM, the small config)
_SMALL: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2": ("Qwen2", {**_GQA, "rope_parameters": _rope(1e6)}),
    "qwen3": ("Qwen3", {**_GQA, "head_dim": 12, "rope_parameters": _rope(1e6)}),
    "olmo2": ("Olmo2", {**_GQA, "rope_parameters": _rope(5e5)}),
    "phi3": ("Phi3", {**_GQA, "sliding_window": 4, "rope_parameters": _rope(1e4)}),
    "gpt_neox": ("GPTNeoX", _NEOX),
    "llama": ("Llama", {**_GQA, "rope_parameters": _rope(5e5)}),  # variants only (hf_models')
}
_LLAMA = {"N": 2, "d_model": 32, "h": 4, "n_kv_heads": 2, "d_ff": 48, "vocab": 61, "context": 16}
_PARAMS: dict[str, dict[str, Any]] = {
    "qwen2": {**_LLAMA, "eps": 1e-6, "rope_theta": 1e6},
    "qwen3": {**_LLAMA, "head_dim": 12, "eps": 1e-6, "rope_theta": 1e6},  # 12 != 32 / 4
    "olmo2": {**_LLAMA, "eps": 1e-6, "rope_theta": 5e5},
    "phi3": {**_LLAMA, "eps": 1e-6, "rope_theta": 1e4, "window": 4},  # the window is below T
    "gpt_neox": {
        "N": 2,
        "d_model": 32,
        "h": 4,
        "d_ff": 48,
        "vocab": 61,
        "context": 16,
        "eps": 1e-5,
        "rope_theta": 1e4,
        "rotary_pct": 0.5,
    },
}
# transformers' configs of the published sizes the specs' defaults are (tests/spec_library.py)
FLAGSHIP: dict[str, dict[str, Any]] = {
    "qwen2": {  # Qwen2.5-7B
        "vocab_size": 152064,
        "hidden_size": 3584,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "tie_word_embeddings": False,
    },
    "qwen3": {  # Qwen3-8B
        "vocab_size": 151936,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "tie_word_embeddings": False,
    },
    "olmo2": {  # OLMo-2-1124-7B
        "vocab_size": 100352,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "tie_word_embeddings": False,
    },
    "phi3": {  # Phi-3-mini-4k
        "vocab_size": 32064,
        "hidden_size": 3072,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "sliding_window": 2047,
    },
    "gpt_neox": {  # Pythia-1.4B
        "vocab_size": 50304,
        "hidden_size": 2048,
        "num_attention_heads": 16,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "rope_parameters": _rope(1e4) | {"partial_rotary_factor": 0.25},
    },
}


def transformers_class(name: str, suffix: str = "ForCausalLM") -> Any:
    """transformers' ``<Family><suffix>`` class of a family (``Config`` for its config)."""
    prefix = _SMALL[name][0]
    module = importlib.import_module(f"transformers.models.{name}")
    return getattr(module, f"{prefix}{suffix}")


def config(name: str, **kw: Any) -> Any:
    """The family's small transformers config, with ``kw`` over it."""
    # a deep copy: transformers' configs fill in the rope_parameters dict they are given
    return transformers_class(name, "Config")(**copy.deepcopy({**_SMALL[name][1], **kw}))


def make(name: str, seed: int = 0, **kw: Any) -> Any:
    """A small random transformers model of the family, every weight re-drawn, eval mode."""
    model = transformers_class(name)(config(name, **kw))
    redraw(model, seed)
    return model.eval()


def inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    # no id 0, the pad token: transformers' embedding leaves its row's gradient at 0
    return {"input_ids": torch.randint(1, 61, (2, 9), generator=g)}


def call(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"logits": m(input_ids=x["input_ids"]).logits}


# (transformers name, archcomp name) of the token embedding, where not Llama's
EMBEDDING = {"gpt_neox": ("gpt_neox.embed_in.weight", "embed_in.weight")}


def _family(name: str) -> Family:
    return Family(
        name,
        lambda: make(name),
        lambda: transformers_class(name),
        _PARAMS[name],
        inputs,
        call,
        EMBEDDING.get(name, ("model.embed_tokens.weight", "embed_tokens.weight")),
    )


FAMILIES = {name: _family(name) for name in _PARAMS}
