"""The Gemma families of the zoo library: Gemma 2 (gemma2) and Gemma 3's text model
(gemma3_text), from small random configs (offline).

Each config has both kinds of layer (local, with a window shorter than the test's 9 tokens,
and global), soft caps small enough to bend the scores and logits, and every weight re-drawn:
transformers initialises the (1 + w) norms' w to zero, which would hide a norm loaded into the
wrong place.
"""

from __future__ import annotations

from typing import Any

import torch
from hf_models import Family

VOCAB = 61


def redrawn(model: Any, seed: int = 5) -> Any:
    """``model`` with every parameter drawn anew (norm gains too), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 0.3 if name.endswith("norm.weight") else 0.2
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def _ids(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, VOCAB, (2, 9), generator=g)}


def _logits(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"logits": m(x["input_ids"]).logits}


_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention
    head_dim=12,  # h * head_dim = 48, not d_model
    max_position_embeddings=16,
    sliding_window=4,  # shorter than the 9 test tokens
    query_pre_attn_scalar=20,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)
_PARAMS = {"vocab": VOCAB, "d_model": 32, "d_ff": 48, "h": 4, "n_kv_heads": 2, "head_dim": 12}
_PARAMS |= {"context": 16, "window": 4, "query_pre_attn_scalar": 20, "eps": 1e-6}


def gemma2(**kw: Any) -> Any:
    """A small random Gemma2ForCausalLM; ``kw`` overrides its config."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(
        **{
            **_SIZES,
            "num_hidden_layers": 3,  # local, global, local
            "attn_logit_softcapping": 2.0,
            "final_logit_softcapping": 3.0,
            "attn_implementation": "eager",  # Gemma 2 has no sdpa path (sdpa cannot soft-cap)
            **kw,
        }
    )
    return redrawn(Gemma2ForCausalLM(cfg))


def _gemma2_cls() -> Any:
    from transformers import Gemma2ForCausalLM

    return Gemma2ForCausalLM


def gemma3_text(attn: str = "sdpa", **kw: Any) -> Any:
    """A small random Gemma3ForCausalLM (sdpa attention, or ``attn``); ``kw`` overrides its
    config. Layers local, local, global, local; the global RoPE scaled linearly."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        **{
            **_SIZES,
            "num_hidden_layers": 4,
            "sliding_window_pattern": 3,
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000.0},
            },
            "attn_implementation": attn,
            **kw,
        }
    )
    return redrawn(Gemma3ForCausalLM(cfg))


def _gemma3_text_cls() -> Any:
    from transformers import Gemma3ForCausalLM

    return Gemma3ForCausalLM


FAMILIES = {
    "gemma2": Family(
        "gemma2",
        gemma2,
        _gemma2_cls,
        {
            **_PARAMS,
            "N": 3,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "rope_theta": 10000.0,
            "attn_softcap": 2.0,
            "final_softcap": 3.0,
        },
        _ids,
        _logits,
        ("model.embed_tokens.weight", "embed_tokens.weight"),
    ),
    "gemma3_text": Family(
        "gemma3_text",
        gemma3_text,
        _gemma3_text_cls,
        {
            **_PARAMS,
            "N": 4,
            "sliding_window_pattern": 3,
            "layer_types": [
                "sliding_attention",
                "sliding_attention",
                "full_attention",
                "sliding_attention",
            ],
            "local_theta": 100.0,  # small bases, so that 9 positions turn far
            "rope_theta": 1000.0,
            "rope_factor": 8.0,
        },
        _ids,
        _logits,
        ("model.embed_tokens.weight", "embed_tokens.weight"),
    ),
}
