"""Small re-drawn transformers decoders saved for the import tests (tests/test_import_*.py
share them: no test module imports another)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hf_models import quiet
from lowering import redraw

VOCAB = 61


def saved(tmp_path: Path, config: str, model: str, **fields: Any) -> tuple[Any, Path]:
    """A re-drawn transformers ``model`` of ``config(**fields)`` and the folder it is saved in."""
    import transformers

    quiet()
    ref = getattr(transformers, model)(getattr(transformers, config)(**fields))
    redraw(ref, 3)
    folder = tmp_path / model.lower()
    ref.save_pretrained(folder)
    return ref.eval(), folder


LLAMA_LIKE = dict(
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    intermediate_size=48,
    vocab_size=VOCAB,
    max_position_embeddings=16,
    rms_norm_eps=1e-6,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)


DEEPSEEK = dict(
    n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, moe_intermediate_size=16,
    kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8,
    **{**LLAMA_LIKE, "num_key_value_heads": 4, "head_dim": 8},  # head_dim: qk_rope_head_dim
)  # fmt: skip


def deepseek(tmp_path: Path, **fields: Any) -> tuple[Any, Path]:
    """A re-drawn DeepseekV3ForCausalLM, its score-correction bias buffers too, saved."""
    import transformers

    quiet()
    ref = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**DEEPSEEK | fields))
    redraw(ref, 3)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, b in ref.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
    folder = tmp_path / "deepseek_v3"
    ref.save_pretrained(folder)
    return ref.eval(), folder
