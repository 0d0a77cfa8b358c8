"""The zoo's encoder-decoder families (BART, T5, Whisper) as transformers models from small
random configs, offline: 2 layers, width 32, and every weight and buffer re-drawn
(tests/lowering.py's ``redraw``; BART's final_logits_bias too), so a weight that loads into
the wrong place cannot hide. Batches carry padding in ``attention_mask`` where the family
reads it.

``make(name, **kw)`` gives a family's model with ``kw`` over its small config
(``attn_implementation``, T5's ``feed_forward_proj``), ``FLAGSHIP`` the transformers config of
the published size each spec's defaults reproduce.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from hf_models import Family
from lowering import redraw

# per family: (transformers' class prefix, the small config)
_SMALL: dict[str, tuple[str, dict[str, Any]]] = {
    "bart": (
        "Bart",
        {
            "vocab_size": 61,
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 48,
            "decoder_ffn_dim": 48,
            "max_position_embeddings": 16,
        },
    ),
}
_PARAMS: dict[str, dict[str, Any]] = {
    "bart": {
        "vocab": 61,
        "d_model": 32,
        "N": 2,
        "N_dec": 2,
        "h": 4,
        "d_ff": 48,
        "max_positions": 16,
        "pad": 1,
        "dropout": 0.1,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
    },
}
# the configurations a family's one mapping reads, each tested with eager and sdpa attention
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "bart": {"large": {}},
}
# transformers' configs of the published sizes the specs' defaults are (tests/spec_library.py)
FLAGSHIP: dict[str, dict[str, Any]] = {
    "bart": {},  # BartConfig's defaults are bart-large
}


def transformers_class(name: str, suffix: str = "ForConditionalGeneration") -> Any:
    """transformers' ``<Family><suffix>`` class of a family (``Config`` for its config)."""
    module = importlib.import_module(f"transformers.models.{name}")
    return getattr(module, f"{_SMALL[name][0]}{suffix}")


def make(name: str, seed: int = 0, **kw: Any) -> Any:
    """A small random transformers model of the family, every weight re-drawn, eval mode."""
    model = transformers_class(name)(transformers_class(name, "Config")(**_SMALL[name][1], **kw))
    redraw(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for buf_name, buf in model.named_buffers():
            if buf_name == "final_logits_bias":  # zeros in every checkpoint: not here
                buf.copy_(0.5 * torch.randn(buf.shape, generator=gen))
    return model.eval()


def _padded_mask(b: int, s: int) -> torch.Tensor:
    mask = torch.ones(b, s, dtype=torch.int64)
    mask[1, s - 3 :] = 0  # the second source ends in padding
    return mask


def text_inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(0, 61, (2, 9), generator=g),
        "attention_mask": _padded_mask(2, 9),
        "decoder_input_ids": torch.randint(0, 61, (2, 7), generator=g),
    }


def text_call(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"logits": m(**x).logits}


FAMILIES: dict[str, Family] = {
    "bart": Family(
        "bart",
        lambda: make("bart"),
        lambda: transformers_class("bart"),
        _PARAMS["bart"],
        text_inputs,
        text_call,
        ("model.shared.weight", "shared.weight"),
    ),
}
