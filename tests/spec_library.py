"""The shipped spec library as tests use it: each spec's exact parameter count, small sizes
for running it, and random example inputs of a checked graph's declared shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from archcomp.ir import Graph
from archcomp.ir.dims import substitute

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# name -> (exact parameter count at the spec's defaults, small overrides for the runtime tests)
LIBRARY: dict[str, tuple[int, dict[str, Any]]] = {
    "mlp": (67, {}),
    "linear_regression": (2, {}),
    "lenet5": (61_706, {}),
    "cnn": (545_098, {}),
    "lstm_classifier": (1_234, {}),
    "rnn": (322, {}),
    "transformer": (
        63_082_496,
        {"N": 1, "d_model": 32, "d_ff": 64, "h": 4, "vocab": 50, "dropout": 0.0},
    ),
    "bert_base": (
        110_106_428,
        {
            "N": 2,
            "d_model": 32,
            "d_ff": 64,
            "h": 4,
            "vocab": 50,
            "max_positions": 16,
            "dropout": 0.0,
        },
    ),
    "gpt2": (
        124_439_808,
        {"N": 2, "d_model": 32, "h": 4, "vocab": 50, "context": 16, "dropout": 0.0},
    ),
    "gpt3": (
        174_604_259_328,
        {"N": 2, "d_model": 32, "h": 4, "vocab": 50, "context": 16, "dropout": 0.0},
    ),
    "resnet18": (11_689_512, {"width": 8, "classes": 10, "image": 32}),
    "resnet50": (25_557_032, {"width": 4, "classes": 10, "image": 32}),
    "llama": (
        8_030_261_248,
        {"N": 2, "d_model": 64, "h": 4, "n_kv_heads": 2, "d_ff": 128, "vocab": 50, "context": 16},
    ),
    "mistral": (
        7_241_732_096,
        {
            "N": 2,
            "d_model": 64,
            "h": 4,
            "n_kv_heads": 2,
            "d_ff": 128,
            "vocab": 50,
            "context": 16,
            "window": 4,
        },
    ),
    "qwen2": (
        7_615_616_512,
        {"N": 2, "d_model": 64, "h": 4, "n_kv_heads": 2, "d_ff": 128, "vocab": 50, "context": 16},
    ),
    "qwen3": (
        8_190_735_360,
        {
            "N": 2,
            "d_model": 64,
            "h": 4,
            "n_kv_heads": 2,
            "head_dim": 8,
            "d_ff": 128,
            "vocab": 50,
            "context": 16,
        },
    ),
    "olmo2": (
        7_298_617_344,
        {"N": 2, "d_model": 64, "h": 4, "n_kv_heads": 2, "d_ff": 128, "vocab": 50, "context": 16},
    ),
    "phi3": (
        3_821_079_552,
        {
            "N": 2,
            "d_model": 64,
            "h": 4,
            "n_kv_heads": 2,
            "d_ff": 128,
            "vocab": 50,
            "context": 16,
            "window": 4,
        },
    ),
    "gemma2": (
        9_241_705_984,
        {
            "N": 3,
            "d_model": 32,
            "h": 4,
            "n_kv_heads": 2,
            "head_dim": 8,
            "d_ff": 64,
            "vocab": 50,
            "context": 16,
            "window": 4,
        },
    ),
    "gemma3_text": (
        3_880_263_168,
        {
            "N": 3,
            "sliding_window_pattern": 2,
            "d_model": 32,
            "h": 4,
            "n_kv_heads": 2,
            "head_dim": 8,
            "d_ff": 64,
            "vocab": 50,
            "context": 16,
            "window": 4,
        },
    ),
    "mamba": (
        129_135_360,
        {"N": 2, "d_model": 32, "d_state": 4, "dt_rank": 4, "vocab": 50},
    ),
    "bart": (
        406_291_456,
        {"N": 1, "N_dec": 1, "d_model": 32, "h": 4, "d_ff": 64, "vocab": 50, "max_positions": 16},
    ),
    "t5": (
        222_903_552,
        {"N": 1, "N_dec": 1, "d_model": 32, "d_kv": 8, "h": 4, "d_ff": 64, "vocab": 50},
    ),
    "whisper": (
        1_543_490_560,
        {
            "N": 1,
            "N_dec": 1,
            "d_model": 32,
            "h": 4,
            "d_ff": 64,
            "vocab": 50,
            "n_mels": 8,
            "max_source_positions": 8,
            "max_target_positions": 16,
            "pad": 1,
        },
    ),
    "vit_b16": (
        86_567_656,
        {"image_size": 32, "patch": 8, "d_model": 32, "h": 4, "N": 2, "d_ff": 64, "classes": 10},
    ),
    "mixtral": (
        46_702_792_704,
        {"N": 2, "d_model": 32, "h": 4, "n_kv_heads": 2, "d_ff": 48, "experts": 4, "vocab": 50},
    ),
    "convnext_tiny": (
        28_589_128,
        {"image": 32, "width": 8, "n1": 1, "n2": 2, "n3": 1, "n4": 1, "classes": 10},
    ),
    "dinov2_base": (
        86_580_480,
        {"image": 42, "image_size": 28, "patch": 7, "d_model": 32, "h": 4, "N": 2, "mlp_ratio": 2},
    ),
    "gpt_neox": (
        1_414_647_808,
        {"N": 2, "d_model": 32, "h": 4, "d_ff": 64, "vocab": 50, "context": 16, "rotary_pct": 0.5},
    ),
    "deepseek_v3": (
        671_026_404_352,
        {
            "N": 2,
            "first_k_dense": 1,
            "d_model": 32,
            "h": 4,
            "q_lora_rank": 12,
            "kv_lora_rank": 16,
            "qk_nope_head_dim": 8,
            "qk_rope_head_dim": 6,
            "v_head_dim": 10,
            "d_ff": 48,
            "moe_d_ff": 16,
            "experts": 4,
            "k": 2,
            "n_group": 2,
            "topk_group": 1,
            "vocab": 50,
            "context": 64,
            "original_context": 16,
        },
    ),
    "swin_tiny": (
        28_288_354,
        {"image": 32, "patch": 2, "width": 8, "window": 2, "n1": 2, "n2": 1, "n3": 2, "n4": 1}
        | {"h1": 1, "h2": 2, "h3": 2, "h4": 4, "classes": 10},
    ),
    "clip_vit_b32": (
        151_277_313,
        {"vocab": 50, "context": 8, "d_text": 32, "h_text": 4, "N_text": 2, "d_ff_text": 48}
        | {"image": 32, "patch": 8, "d_vision": 24, "h_vision": 2, "N_vision": 2}
        | {"d_ff_vision": 40, "projection": 16},
    ),
}
SIZES = {"B": 3, "S": 8, "T": 6, "N": 2}  # N: CLIP's texts, batched apart from its images


def example_inputs(g: Graph, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random inputs of the graph's declared shapes: ids below every consuming embedding's size;
    an integer input no embedding reads is an attention_mask (1 = real), its last position 0."""
    out: dict[str, torch.Tensor] = {}
    for name, info in g.inputs.items():
        shape = [int(substitute(d, SIZES)) for d in info.type.shape]  # type: ignore[call-overload]
        if info.type.dtype == "int64":
            limits = [
                n.args.num_embeddings
                for n in g.nodes.values()
                if n.op.name == "embedding" and any(r.node == name for r in n.refs())
            ]
            if not limits:
                out[name] = torch.ones(shape, dtype=torch.int64)
                out[name][..., -1] = 0  # pad the last position
                continue
            out[name] = torch.randint(0, min(limits), shape, generator=gen)
        elif info.type.dtype == "bool":
            out[name] = torch.zeros(shape, dtype=torch.bool)
            out[name][..., -1] = True  # pad the last position
        else:
            out[name] = torch.randn(shape, generator=gen)
    return out
