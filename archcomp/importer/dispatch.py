"""Which recogniser reads a module: torch's ``nn.MultiheadAttention``, the encoder-decoder
families' positions and scaled embeddings (recognise_encdec.py), the decoder families
(recognise_decoders.py: GPT-2, BERT, Gemma, MoE), then the Llama family's and torch.nn's
(recognise.py); a module that only scales by its one gain is a ``layer_scale``
(parameters.py). Each family's recogniser is tried where another refuses its module."""

from __future__ import annotations

from torch import fx, nn

from archcomp.importer import recognise_encdec as encdec
from archcomp.importer.exported import Flat
from archcomp.importer.mha import torch_mha
from archcomp.importer.parameters import layer_scale_of
from archcomp.importer.recognise import Op, recognise
from archcomp.importer.recognise_decoders import position_table, recognise_family
from archcomp.importer.swin import window_attention


def recognise_any(
    flat: Flat, path: str, module: nn.Module, group: list[fx.Node]
) -> Op | str | None:
    """The op of the module at ``path`` that ran ``group``; a reason string where a recogniser
    knows the module but cannot say what it computes; None for a module that becomes a block."""
    if isinstance(module, nn.MultiheadAttention):
        return torch_mha(flat, module, group)
    pos = encdec.positions(flat, module, group)  # an embedding of positions, added to x
    if isinstance(pos, tuple) or (pos is not None and not position_table(flat, module, group)):
        return pos  # else BERT's position_ids buffer: read by the scope (position_table)
    emb = encdec.scaled_embedding(module, group)  # BART's embed_tokens
    if isinstance(emb, tuple):
        return emb
    gain = layer_scale_of(flat, module, group)  # DINOv2's Dinov2LayerScale
    if gain is not None:
        return gain
    window = window_attention(flat, path, module, group)  # Swin's, with its position bias
    if window is not None:
        return window
    family = recognise_family(flat, path, module, group)  # Gemma's scaled embedding, ...
    if family is not None or emb is not None:
        return family if family is not None else emb
    return recognise(flat, path, module, group)
