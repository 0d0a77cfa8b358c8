"""transformers models of the zoo's vision families (ConvNeXt, DINOv2, Swin, CLIP) from small
random configs, every parameter re-drawn (layer scales and norm gains included), so a weight
that loads into the wrong place, or not at all, changes the outputs. Merged into
``hf_models.FAMILIES``."""

from __future__ import annotations

import math
from typing import Any

import torch
from hf_models import Family

_SEED = 7


def _redrawn(model: Any) -> Any:
    """``model`` with every parameter re-drawn (seeded): weights ~ N(0, 1/fan_in), norm gains
    ~ 1 + N(0, 0.3), everything else (biases, layer scales, tokens, tables) ~ N(0, 0.5)."""
    gen = torch.Generator().manual_seed(_SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if p.dim() >= 2 and "embeddings" not in name and "token" not in name:
                p.copy_(r / math.sqrt(math.prod(p.shape[1:])))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * r)
            else:
                p.copy_(0.5 * r)
    return model.eval()


def _pixels(size: int) -> Any:
    def inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.randn(2, 3, size, size, generator=g)}

    return inputs


def _logits(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"logits": m(pixel_values=x["pixel_values"]).logits}


# -- ConvNeXt ---------------------------------------------------------------------------------


def _convnext() -> Any:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    cfg = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 2, 1, 1], num_labels=5)
    return _redrawn(ConvNextForImageClassification(cfg))


def _convnext_cls() -> Any:
    from transformers import ConvNextForImageClassification

    return ConvNextForImageClassification


# -- DINOv2 -----------------------------------------------------------------------------------


def _dinov2() -> Any:
    from transformers import Dinov2Config, Dinov2Model

    # positions for 4 x 4 patches; the spec's default input, 224 x 224, has 16 x 16 (the
    # input size is no checkpoint's): the table is resized bicubically
    cfg = Dinov2Config(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        mlp_ratio=2,
        image_size=56,
        patch_size=14,
    )
    return _redrawn(Dinov2Model(cfg))


def _dinov2_cls() -> Any:
    from transformers import Dinov2Model

    return Dinov2Model


def _dinov2_inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    masked = torch.rand(2, 256, generator=g) < 0.3  # some patches replaced by the mask token
    return {"pixel_values": torch.randn(2, 3, 224, 224, generator=g), "bool_masked_pos": masked}


def _dinov2_call(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = m(pixel_values=x["pixel_values"], bool_masked_pos=x["bool_masked_pos"])
    return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}


FAMILIES = {
    "convnext_tiny": Family(
        "convnext_tiny",
        _convnext,
        _convnext_cls,
        {"classes": 5, "width": 8, "n1": 1, "n2": 2, "n3": 1, "n4": 1},
        _pixels(32),
        _logits,
        ("convnext.embeddings.patch_embeddings.weight", "embeddings.patch_embeddings.weight"),
    ),
    "dinov2_base": Family(
        "dinov2_base",
        _dinov2,
        _dinov2_cls,
        {"N": 2, "d_model": 32, "h": 4, "mlp_ratio": 2, "image_size": 56, "patch": 14},
        _dinov2_inputs,
        _dinov2_call,
        ("embeddings.position_embeddings", "position_embeddings.weight"),
    ),
}


# the published model of each family, as transformers configures it: (class, config fields);
# the spec's defaults must have its parameter count
FLAGSHIP: dict[str, tuple[str, str, dict[str, Any]]] = {
    "convnext_tiny": ("ConvNextConfig", "ConvNextForImageClassification", {"num_labels": 1000}),
    "dinov2_base": ("Dinov2Config", "Dinov2Model", {"image_size": 518}),
}


def flagship_parameters(name: str) -> int:
    """The parameter count of transformers' published model of the family, built on meta."""
    import transformers

    config, cls, fields = FLAGSHIP[name]
    with torch.device("meta"):
        model = getattr(transformers, cls)(getattr(transformers, config)(**fields))
    return sum(p.numel() for p in model.parameters())
