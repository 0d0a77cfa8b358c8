"""Zoo families with routed experts or scans (#25): Mixtral, DeepSeek-V3 and Mamba, each a
transformers model from a small random config (2-3 layers, width 32, 4 experts, 2 per token)
with every weight, the routers' score-correction bias included, re-drawn before
save_pretrained, so no constant initialisation (zeros, ones) hides a tensor loaded into the
wrong place. Joined into ``hf_models.FAMILIES``."""

from __future__ import annotations

from typing import Any

import torch
from hf_models import Family


def redraw(model: Any, seed: int = 5) -> Any:
    """Every parameter and floating buffer of ``model`` drawn again: weights with variance
    1 / fan_in (the last dim: stacked experts too), norm gains near 1, the rest of unit
    scale; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        named = [*model.named_parameters(), *model.named_buffers()]
        for name, t in named:
            if not t.is_floating_point() or name.endswith(("inv_freq", "original_inv_freq")):
                continue
            noise = torch.randn(t.shape, generator=g)
            if "norm" in name:
                t.copy_(1 + 0.2 * noise)
            elif name.endswith("A_log"):
                t.copy_(noise * 0.7)
            elif t.dim() >= 2 and "embed" not in name:
                t.copy_(noise / t.shape[-1] ** 0.5)
            else:
                t.copy_(noise * 0.5)
    return model.eval()


def _ids(vocab: int) -> Any:
    def inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.randint(0, vocab, (2, 9), generator=g)}

    return inputs


def _logits(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"logits": m(input_ids=x["input_ids"]).logits}


MIXTRAL_CONFIG = dict(
    num_hidden_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=48,
    num_local_experts=4,
    num_experts_per_tok=2,
    vocab_size=61,
    max_position_embeddings=16,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
)


def _mixtral(attn: str = "sdpa") -> Any:
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(**MIXTRAL_CONFIG, attn_implementation=attn)
    return redraw(MixtralForCausalLM(config))


def _mixtral_cls() -> Any:
    from transformers import MixtralForCausalLM

    return MixtralForCausalLM


MIXTRAL_PARAMS = {"N": 2, "d_model": 32, "h": 4, "n_kv_heads": 2, "d_ff": 48, "experts": 4}
MIXTRAL_PARAMS |= {"top_k": 2, "vocab": 61, "context": 16, "eps": 1e-5}
MIXTRAL_PARAMS |= {"rope_theta": 1000000.0}


def _mamba() -> Any:
    from transformers import MambaConfig, MambaForCausalLM

    config = MambaConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        state_size=4,
        conv_kernel=4,
        expand=2,
        time_step_rank=3,
        use_mambapy=False,
        use_associative_scan=False,  # the sequential slow path, transformers' reference
    )
    return redraw(MambaForCausalLM(config))


def _mamba_cls() -> Any:
    from transformers import MambaForCausalLM

    return MambaForCausalLM


MAMBA_PARAMS = {"vocab": 50, "d_model": 32, "N": 2, "d_state": 4, "d_conv": 4, "expand": 2}
MAMBA_PARAMS |= {"dt_rank": 3, "eps": 1e-5}

DEEPSEEK_V3_CONFIG = dict(
    vocab_size=50,
    hidden_size=32,
    intermediate_size=64,
    moe_intermediate_size=16,
    num_hidden_layers=3,
    first_k_dense_replace=1,
    num_attention_heads=4,
    num_key_value_heads=4,
    q_lora_rank=12,
    kv_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=6,
    v_head_dim=10,
    n_routed_experts=4,
    num_experts_per_tok=2,
    n_group=2,
    topk_group=1,
    n_shared_experts=1,
    routed_scaling_factor=2.5,
    max_position_embeddings=64,
)


def _deepseek_v3(attn: str = "sdpa", **kw: Any) -> Any:
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    config = DeepseekV3Config(**{**DEEPSEEK_V3_CONFIG, **kw}, attn_implementation=attn)
    return redraw(DeepseekV3ForCausalLM(config))


def _deepseek_v3_cls() -> Any:
    from transformers import DeepseekV3ForCausalLM

    return DeepseekV3ForCausalLM


DEEPSEEK_V3_PARAMS = {"vocab": 50, "d_model": 32, "d_ff": 64, "moe_d_ff": 16, "N": 3}
DEEPSEEK_V3_PARAMS |= {"first_k_dense": 1, "h": 4, "q_lora_rank": 12, "kv_lora_rank": 16}
DEEPSEEK_V3_PARAMS |= {"qk_nope_head_dim": 8, "qk_rope_head_dim": 6, "v_head_dim": 10}
DEEPSEEK_V3_PARAMS |= {"experts": 4, "k": 2, "n_group": 2, "topk_group": 1, "n_shared": 1}
DEEPSEEK_V3_PARAMS |= {"routed_scaling_factor": 2.5, "norm_topk_prob": True, "context": 64}
DEEPSEEK_V3_PARAMS |= {"interleaved": True, "rope_theta": 10000.0, "rope_factor": 1.0}
DEEPSEEK_V3_PARAMS |= {"original_context": 64, "beta_fast": 32.0, "beta_slow": 1.0}
DEEPSEEK_V3_PARAMS |= {"mscale": 0.0, "mscale_all_dim": 0.0, "eps": 1e-6}

FAMILIES = {
    "mixtral": Family(
        "mixtral",
        _mixtral,
        _mixtral_cls,
        MIXTRAL_PARAMS,
        _ids(61),
        _logits,
        ("model.embed_tokens.weight", "embed_tokens.weight"),
    ),
    "mamba": Family(
        "mamba",
        _mamba,
        _mamba_cls,
        MAMBA_PARAMS,
        _ids(50),
        _logits,
        ("backbone.embeddings.weight", "embeddings.weight"),
    ),
    "deepseek_v3": Family(
        "deepseek_v3",
        _deepseek_v3,
        _deepseek_v3_cls,
        DEEPSEEK_V3_PARAMS,
        _ids(50),
        _logits,
        ("model.embed_tokens.weight", "embed_tokens.weight"),
    ),
}
