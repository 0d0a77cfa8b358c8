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
    "t5": (
        "T5",
        {
            "vocab_size": 61,
            "d_model": 32,
            "d_kv": 12,  # h * d_kv = 48, not d_model
            "num_heads": 4,
            "num_layers": 2,
            "num_decoder_layers": 2,
            "d_ff": 48,
            "relative_attention_num_buckets": 8,
            "relative_attention_max_distance": 20,
        },
    ),
    "whisper": (
        "Whisper",
        {
            "vocab_size": 61,
            "num_mel_bins": 8,
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 48,
            "decoder_ffn_dim": 48,
            "max_source_positions": 8,  # 16 input frames
            "max_target_positions": 16,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "decoder_start_token_id": 0,
            "begin_suppress_tokens": None,
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
    "t5": {
        "vocab": 61,
        "d_model": 32,
        "d_kv": 12,
        "h": 4,
        "N": 2,
        "N_dec": 2,
        "d_ff": 48,
        "num_buckets": 8,
        "max_distance": 20,
        "eps": 1e-6,
        "dropout": 0.1,
        "feed_forward_proj": "relu",
        "tie_word_embeddings": True,
        "scale_decoder_outputs": True,
    },
    "whisper": {
        "vocab": 61,
        "n_mels": 8,
        "d_model": 32,
        "h": 4,
        "N": 2,
        "N_dec": 2,
        "d_ff": 48,
        "max_source_positions": 8,
        "max_target_positions": 16,
        "pad": 1,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
    },
}
# the configurations a family's one mapping reads, each tested with eager and sdpa attention
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "bart": {"large": {}},
    "t5": {
        "v1_0": {},
        # v1.1 as the hub stores it: gated-GELU, an LM head of its own, tie_word_embeddings false
        "v1_1": {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
        # v1.1 as transformers 5 builds it from scratch: the head tied, the output unscaled
        "v1_1_tied": {"feed_forward_proj": "gated-gelu", "scale_decoder_outputs": False},
    },
    "whisper": {"large_v3": {}},
}
# transformers' configs of the published sizes, each with the spec params that give it: the
# first is the spec's defaults (tests/spec_library.py), others variants by -p
_WHISPER_LARGE = {
    "vocab_size": 51866,
    "num_mel_bins": 128,
    "d_model": 1280,
    "encoder_layers": 32,
    "decoder_layers": 32,
    "encoder_attention_heads": 20,
    "decoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_ffn_dim": 5120,
}
_V1_1 = {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
FLAGSHIP: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {
    "bart": [({}, {})],  # BartConfig's defaults are bart-large
    "t5": [
        ({"d_model": 768, "d_ff": 3072, "num_layers": 12, "num_heads": 12}, {}),  # t5-base
        (  # t5-v1_1-base
            {"d_model": 768, "d_ff": 2048, "num_layers": 12, "num_heads": 12, **_V1_1},
            {"d_ff": 2048, **_V1_1, "scale_decoder_outputs": False},
        ),
    ],
    "whisper": [
        (_WHISPER_LARGE, {}),  # large-v3
        (
            {**_WHISPER_LARGE, "vocab_size": 51865, "num_mel_bins": 80},
            {"vocab": 51865, "n_mels": 80},
        ),
    ],
}


def transformers_class(name: str, suffix: str = "ForConditionalGeneration") -> Any:
    """transformers' ``<Family><suffix>`` class of a family (``Config`` for its config)."""
    module = importlib.import_module(f"transformers.models.{name}")
    return getattr(module, f"{_SMALL[name][0]}{suffix}")


def build(name: str, **config: Any) -> Any:
    """transformers' model of a family from a config (on the default device); T5 with
    ``tie_word_embeddings: false`` (v1.1) gets an LM head of its own, as the hub's checkpoints
    store it (transformers 5 builds every T5 tied and unties on loading such a checkpoint)."""
    model = transformers_class(name)(transformers_class(name, "Config")(**config))
    if name == "t5" and config.get("tie_word_embeddings") is False:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
    return model


def make(name: str, seed: int = 0, **kw: Any) -> Any:
    """A small random transformers model of the family, every weight re-drawn, eval mode."""
    model = build(name, **_SMALL[name][1], **kw)
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
        "decoder_input_ids": torch.randint(0, 61, (2, 7), generator=g),  # pad ids among them
    }


def audio_inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 61, (2, 7), generator=g)
    ids[1, -2:] = 1  # padding tokens: their embedding row gets no gradient
    return {"input_features": torch.randn(2, 8, 16, generator=g), "decoder_input_ids": ids}


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
    "t5": Family(
        "t5",
        lambda: make("t5"),
        lambda: transformers_class("t5"),
        _PARAMS["t5"],
        text_inputs,
        text_call,
        ("shared.weight", "shared.weight"),
    ),
    "whisper": Family(
        "whisper",
        lambda: make("whisper"),
        lambda: transformers_class("whisper"),
        _PARAMS["whisper"],
        audio_inputs,
        text_call,
        ("model.decoder.embed_tokens.weight", "decoder_embed_tokens.weight"),
    ),
}
