"""transformers models of each family with a mapping, from small random configs (offline).

Each family gives the transformers class, a small config, the spec params it corresponds to,
and how to call both models on the same random batch. Used by the checkpoint tests, the
hostile checkpoint corpus and the benchmark's checks; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def quiet() -> None:
    """No progress bars or advice from transformers in test output."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


@dataclass(frozen=True)
class Family:
    name: str  # the shipped mapping's name (specs/hf/<name>.yaml) and spec
    make: Callable[[], Any]  # a transformers model, random weights, eval mode
    cls: Callable[[], Any]  # the transformers class (for from_pretrained)
    params: dict[str, Any]  # the spec's params of the same model
    inputs: Callable[[torch.Generator], dict[str, torch.Tensor]]  # a batch, by spec input name
    hf_call: Callable[[Any, dict[str, torch.Tensor]], dict[str, torch.Tensor]]  # outputs by name
    embedding: tuple[str, str]  # (transformers name, archcomp name) of a weight, for grads


def _gpt2() -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=4,
        vocab_size=61,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg).eval()


def _gpt2_cls() -> Any:
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel


def _bert() -> Any:
    from transformers import BertConfig, BertForPreTraining

    cfg = BertConfig(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=48,
        vocab_size=61,
        max_position_embeddings=16,
        type_vocab_size=2,
        pad_token_id=0,
    )
    return BertForPreTraining(cfg).eval()


def _bert_cls() -> Any:
    from transformers import BertForPreTraining

    return BertForPreTraining


def _gpt2_inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"ids": torch.randint(0, 61, (2, 9), generator=g)}


def _bert_inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, 6:] = True  # the second sequence ends in padding
    return {
        "input_ids": torch.randint(0, 61, (2, 9), generator=g),
        "token_type_ids": torch.randint(0, 2, (2, 9), generator=g),
        "padding_mask": mask,
    }


def _gpt2_call(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"logits": m(x["ids"]).logits}


def _bert_call(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # transformers' attention_mask is 1 where a position is real: the inverse of padding_mask
    out = m(
        input_ids=x["input_ids"],
        token_type_ids=x["token_type_ids"],
        attention_mask=(~x["padding_mask"]).long(),
    )
    return {"mlm_logits": out.prediction_logits, "nsp_logits": out.seq_relationship_logits}


def _llama_config(**kw: Any) -> dict[str, Any]:
    return dict(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention
        intermediate_size=48,
        vocab_size=61,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        **kw,
    )


def _llama() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**_llama_config(rope_theta=500000.0))).eval()


def _llama_cls() -> Any:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM


def _mistral() -> Any:
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(MistralConfig(**_llama_config(sliding_window=4))).eval()


def _mistral_cls() -> Any:
    from transformers import MistralForCausalLM

    return MistralForCausalLM


def _vit() -> Any:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=48,
        image_size=32,
        patch_size=8,
        num_labels=5,
    )
    return ViTForImageClassification(cfg).eval()


def _vit_cls() -> Any:
    from transformers import ViTForImageClassification

    return ViTForImageClassification


def _vit_inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"images": torch.randn(2, 3, 32, 32, generator=g)}


def _vit_call(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"logits": m(pixel_values=x["images"]).logits}


def _resnet(layer_type: str, widths: list[int]) -> Callable[[], Any]:
    def make() -> Any:
        from transformers import ResNetConfig, ResNetForImageClassification

        cfg = ResNetConfig(
            embedding_size=8,
            hidden_sizes=widths,
            depths=[1, 2, 1, 1],
            layer_type=layer_type,
            num_labels=5,
        )
        model = ResNetForImageClassification(cfg)
        with torch.no_grad():  # batch norm with statistics of its own, not 0 and 1
            g = torch.Generator().manual_seed(3)
            for name, t in model.named_buffers():
                if name.endswith("running_mean"):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                elif name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif name.endswith("num_batches_tracked"):
                    t.fill_(7)
        return model.eval()

    return make


def _resnet_cls() -> Any:
    from transformers import ResNetForImageClassification

    return ResNetForImageClassification


def _image_inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(2, 3, 32, 32, generator=g)}


def _image_call(m: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"logits": m(pixel_values=x["x"]).logits}


_RESNET = {"classes": 5, "width": 8, "n1": 1, "n2": 2, "n3": 1, "n4": 1}  # any image size
_LLAMA_PARAMS = {"N": 2, "d_model": 32, "h": 4, "n_kv_heads": 2, "d_ff": 48, "vocab": 61}
_LLAMA_PARAMS |= {"context": 16, "eps": 1e-6}

FAMILIES = {
    "gpt2": Family(
        "gpt2",
        _gpt2,
        _gpt2_cls,
        {"N": 2, "d_model": 32, "h": 4, "vocab": 61, "context": 16, "dropout": 0.1},
        _gpt2_inputs,
        _gpt2_call,
        ("transformer.wte.weight", "wte.weight"),
    ),
    "bert_base": Family(
        "bert_base",
        _bert,
        _bert_cls,
        {
            "N": 2,
            "d_model": 32,
            "h": 4,
            "d_ff": 48,
            "vocab": 61,
            "max_positions": 16,
            "type_vocab": 2,
            "dropout": 0.1,
        },
        _bert_inputs,
        _bert_call,
        ("bert.embeddings.word_embeddings.weight", "word_embeddings.weight"),
    ),
    "llama": Family(
        "llama",
        _llama,
        _llama_cls,
        {**_LLAMA_PARAMS, "rope_theta": 500000.0},
        _gpt2_inputs,
        _gpt2_call,
        ("model.embed_tokens.weight", "embed_tokens.weight"),
    ),
    "mistral": Family(
        "mistral",
        _mistral,
        _mistral_cls,
        {**_LLAMA_PARAMS, "window": 4, "rope_theta": 10000.0},  # the window is shorter than T
        _gpt2_inputs,
        _gpt2_call,
        ("model.embed_tokens.weight", "embed_tokens.weight"),
    ),
    "vit_b16": Family(
        "vit_b16",
        _vit,
        _vit_cls,
        {"N": 2, "d_model": 32, "h": 4, "d_ff": 48, "image_size": 32, "patch": 8, "classes": 5},
        _vit_inputs,
        _vit_call,
        ("vit.embeddings.cls_token", "class_token.weight"),
    ),
    "resnet18": Family(
        "resnet18",
        _resnet("basic", [8, 16, 32, 64]),
        _resnet_cls,
        _RESNET,
        _image_inputs,
        _image_call,
        ("resnet.embedder.embedder.convolution.weight", "conv1.weight"),
    ),
    "resnet50": Family(
        "resnet50",
        _resnet("bottleneck", [32, 64, 128, 256]),
        _resnet_cls,
        _RESNET,
        _image_inputs,
        _image_call,
        ("resnet.embedder.embedder.convolution.weight", "conv1.weight"),
    ),
}


def _zoo_families() -> dict[str, Family]:
    """The families of the zoo library, one file per group: ``tests/hf_zoo_<group>.py``, each
    with its own ``FAMILIES`` (so groups are written and reviewed apart)."""
    import importlib

    found: dict[str, Family] = {}
    for path in sorted(Path(__file__).parent.glob("hf_zoo_*.py")):
        group = importlib.import_module(path.stem).FAMILIES
        assert not set(group) & (set(found) | set(FAMILIES)), f"{path.name} repeats a family"
        found.update(group)
    return found


FAMILIES |= _zoo_families()


def shipped() -> list[str]:
    """The families whose mapping ships (a family waits here for its spec and mapping)."""
    from archcomp.checkpoints.library import shipped_mappings

    return sorted(n for n in FAMILIES if n in shipped_mappings())


def outputs(model: Any, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An archcomp model's outputs by name (a single output is a tensor)."""
    y = model(**x)
    return y if isinstance(y, dict) else {model.output_names[0]: y}


def save(family: Family, folder: Path, seed: int = 0, **kw: Any) -> Any:
    """A random transformers model of the family, saved to ``folder``; returns the model."""
    quiet()
    torch.manual_seed(seed)
    model = family.make()
    model.save_pretrained(folder, **kw)
    return model
