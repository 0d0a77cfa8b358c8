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
    return {"pixel_values": torch.randn(2, 3, 224, 224, generator=g)}


def dinov2_masked_inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    """Images and bool_masked_pos, some patches replaced by the mask token (-p masking=true)."""
    masked = torch.rand(2, 256, generator=g) < 0.3
    return {**_dinov2_inputs(g), "bool_masked_pos": masked}


def _dinov2_call(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = m(**x)  # bool_masked_pos where given, as transformers' optional argument
    return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}


# -- Swin -------------------------------------------------------------------------------------


def _swin() -> Any:
    # maps of 32, 16, 8, 4 patches, windows of 4 shifted by 2 (stages 1-3), the last stage one
    # window (no shift)
    return swin_model(64, [2, 1, 2, 2])


def swin_model(image_size: int, depths: list[int]) -> Any:
    """A small random Swin: 2 x 2 patches, windows of 4, widths 8-64."""
    from transformers import SwinConfig, SwinForImageClassification

    cfg = SwinConfig(
        image_size=image_size,
        patch_size=2,
        embed_dim=8,
        depths=depths,
        num_heads=[1, 2, 2, 4],
        window_size=4,
        num_labels=5,
    )
    return _redrawn(SwinForImageClassification(cfg))


def _swin_cls() -> Any:
    from transformers import SwinForImageClassification

    return SwinForImageClassification


# -- CLIP -------------------------------------------------------------------------------------


def clip_model(eos_token_id: int) -> Any:
    def make() -> Any:
        from transformers import CLIPConfig, CLIPModel

        text = {"vocab_size": 61, "max_position_embeddings": 12, "hidden_size": 32}
        text |= {"num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 48}
        vision = {"image_size": 32, "patch_size": 8, "hidden_size": 24, "num_attention_heads": 2}
        vision |= {"num_hidden_layers": 2, "intermediate_size": 40}
        text |= {"eos_token_id": eos_token_id, "bos_token_id": 0, "pad_token_id": 1}
        cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
        return _redrawn(CLIPModel(cfg))

    return make


def _clip_cls() -> Any:
    from transformers import CLIPModel

    return CLIPModel


def clip_inputs(eos_token_id: int) -> Any:
    def inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
        """3 texts of up to 9 tokens (the second padded after 6) ending in the end-of-text id
        (the largest id when that is 2), and 2 images."""
        ids = torch.randint(3, 50, (3, 9), generator=g)
        mask = torch.ones(3, 9, dtype=torch.int64)
        eos = 60 if eos_token_id == 2 else eos_token_id
        ids[:, 7] = eos
        ids[1, 5] = eos
        ids[1, 6:] = 1
        mask[1, 6:] = 0
        pixels = torch.randn(2, 3, 32, 32, generator=g)
        return {"input_ids": ids, "pixel_values": pixels, "attention_mask": mask}

    return inputs


def _clip_call(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = m(**x)
    names = ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds")
    return {name: getattr(out, name) for name in names}


_CLIP = {"vocab": 61, "context": 12, "d_text": 32, "h_text": 4, "N_text": 2, "d_ff_text": 48}
_CLIP |= {"image": 32, "patch": 8, "d_vision": 24, "h_vision": 2, "N_vision": 2}
_CLIP |= {"d_ff_vision": 40, "projection": 16}

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
    "swin_tiny": Family(
        "swin_tiny",
        _swin,
        _swin_cls,
        {"image": 64, "patch": 2, "width": 8, "n1": 2, "n2": 1, "n3": 2, "window": 4}
        | {"h1": 1, "h2": 2, "h3": 2, "h4": 4},
        _pixels(64),
        _logits,
        (
            "swin.encoder.layers.0.blocks.1.attention.relative_position_bias.relative_position_bias_table",
            "stage1.blocks.1.relative_position_bias.relative_position_bias_table",
        ),
    ),
    "clip_vit_b32": Family(
        "clip_vit_b32",
        clip_model(2),
        _clip_cls,
        _CLIP,
        clip_inputs(2),
        _clip_call,
        # through the causal layers, the padding and the end-of-text pooling
        ("text_model.embeddings.token_embedding.weight", "text_model.token_embedding.weight"),
    ),
}


# the published model of each family, as transformers configures it: (class, config fields);
# the spec's defaults must have its parameter count
FLAGSHIP: dict[str, tuple[str, str, dict[str, Any]]] = {
    "convnext_tiny": ("ConvNextConfig", "ConvNextForImageClassification", {"num_labels": 1000}),
    "dinov2_base": ("Dinov2Config", "Dinov2Model", {"image_size": 518}),
    "swin_tiny": ("SwinConfig", "SwinForImageClassification", {"num_labels": 1000}),
    "clip_vit_b32": ("CLIPConfig", "CLIPModel", {}),
}


def flagship_parameters(name: str) -> int:
    """The parameter count of transformers' published model of the family, built on meta."""
    import transformers

    config, cls, fields = FLAGSHIP[name]
    with torch.device("meta"):
        model = getattr(transformers, cls)(getattr(transformers, config)(**fields))
    return sum(p.numel() for p in model.parameters())
