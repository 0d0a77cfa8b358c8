"""The example inputs ``import --hf`` traces a transformers model on, from its forward's arguments
and its config: ``input_ids`` for a decoder; ``input_ids`` and ``decoder_input_ids`` for an
encoder-decoder (T5, BART); ``input_features`` (Whisper: the mel frames its encoder takes) and
``pixel_values`` (CLIP: one image of the vision config's size). Each input's shape is written in
symbols (``B``, ``S``, ``T``) where the size is free, and literally where the config fixes it;
a model of texts and images (CLIP) batches them apart: ``N`` texts, ``B`` images."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from archcomp.base.errors import UsageError

B, T, S, N = 2, 5, 7, 3  # example sizes: batch, (target) length, source length, texts beside images


@dataclass(frozen=True)
class Example:
    """One traced input: its name, shape (symbols or ints), example sizes and dtype."""

    name: str
    shape: tuple[str | int, ...]
    dtype: str

    def sizes(self, dims: dict[str, int]) -> list[int]:
        return [dims[s] if isinstance(s, str) else s for s in self.shape]


def examples(model: Any, padded: bool = False) -> list[Example]:
    """The inputs of ``model``'s forward to trace it on, in its argument order; a decoder's
    ``attention_mask`` where ``padded`` (``import --hf --attention-mask``)."""
    args = inspect.signature(type(model).forward).parameters
    cfg = model.config
    seq2seq = "decoder_input_ids" in args
    texts = "N" if "pixel_values" in args and "input_ids" in args else "B"  # CLIP: apart
    out: list[Example] = []
    if "input_features" in args:  # Whisper: (B, mel bins, 2 * max_source_positions frames)
        frames = 2 * int(cfg.max_source_positions)
        out.append(Example("input_features", ("B", int(cfg.num_mel_bins), frames), "float32"))
    elif "input_ids" in args:
        out.append(Example("input_ids", (texts, "S" if seq2seq else "T"), "int64"))
        if "token_type_ids" in args and _has_segments(model):  # BERT's segments
            out.append(Example("token_type_ids", ("B", "T"), "int64"))
            if "attention_mask" in args:  # and its padding (ones: every key takes part)
                out.append(Example("attention_mask", ("B", "T"), "int64"))
        elif padded and not seq2seq and "attention_mask" in args and "pixel_values" not in args:
            out.append(Example("attention_mask", ("B", "T"), "int64"))  # a decoder's padding
    if "pixel_values" in args:  # vision models, CLIP: one image of the vision tower's size
        vision = getattr(cfg, "vision_config", cfg)
        chans = getattr(vision, "num_channels", 3)
        if not isinstance(chans, int):
            raise UsageError(f"{type(vision).__name__}: no int num_channels for pixel_values")
        out.append(Example("pixel_values", ("B", chans, *_image_size(vision)), "float32"))
    if seq2seq:
        out.append(Example("decoder_input_ids", ("B", "T"), "int64"))
    if padded and "attention_mask" not in [e.name for e in out]:
        raise UsageError(
            f"--attention-mask: {type(model).__name__} is not a decoder whose forward takes an "
            "attention_mask beside input_ids (done: Llama's family, BERT's without the flag)"
        )
    if not out:
        raise UsageError(
            f"{type(model).__name__}.forward takes none of input_ids, input_features and "
            "pixel_values: no example input to trace it on"
        )
    return out


def _image_size(cfg: Any) -> list[int]:
    size = getattr(cfg, "image_size", None)
    if isinstance(size, int):
        return [size, size]
    if isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return list(size)
    if size is None:  # ResNet and ConvNeXt configs size no image: any does, 224 as trained
        return [224, 224]
    raise UsageError(f"{type(cfg).__name__}: image_size {size!r} is not an int or [H, W]")


def _has_segments(model: Any) -> bool:
    """A ``token_type_embeddings`` table (BERT; transformers' default ids, zeros, are a buffer;
    GPT-2 takes the argument but has no table: not given)."""
    return any(p.endswith("token_type_embeddings") for p, _ in model.named_modules())


def dims_of(inputs: list[Example]) -> dict[str, int]:
    """The example size of each symbol the inputs use."""
    used = {s for e in inputs for s in e.shape if isinstance(s, str)}
    return {k: v for k, v in (("B", B), ("N", N), ("S", S), ("T", T)) if k in used}


def leading(inputs: list[Example]) -> tuple[tuple[int, str], ...]:
    """The first input's leading symbols as (size, name): the blocks' shape comments name them."""
    dims, out = dims_of(inputs), []
    for s in inputs[0].shape:
        if not isinstance(s, str):
            break
        out.append((dims[s], s))
    return tuple(out)


def batches(inputs: list[Example]) -> dict[int, str]:
    """Each input's leading symbol by its example size (CLIP's ``N`` texts and ``B`` images):
    what a class token is expanded to, read back as a symbol."""
    dims = dims_of(inputs)
    return {dims[e.shape[0]]: e.shape[0] for e in inputs if e.shape and isinstance(e.shape[0], str)}


def tensors(inputs: list[Example], device: Any = "meta") -> dict[str, Any]:
    """The example tensors (zeros, on ``device``)."""
    import torch

    dims = dims_of(inputs)
    return {
        e.name: torch.zeros(e.sizes(dims), dtype=getattr(torch, e.dtype), device=device)
        for e in inputs
    }


def declared(inputs: list[Example]) -> dict[str, dict[str, Any]]:
    """The spec's ``inputs:`` entries."""
    return {
        e.name: {"shape": list(e.shape)} | ({"dtype": e.dtype} if e.dtype != "float32" else {})
        for e in inputs
    }
