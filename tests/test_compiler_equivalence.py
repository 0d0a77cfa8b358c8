"""Compiled specs against independent references, with the references' weights copied in.

Each case: forward and gradients, ``torch.compile(fullgraph=True)``, ``torch.export``, and the
``--emit-python`` source equal to the compiled module, with one thread and with several. The
tolerances follow tests/NUMERICS.md (``numerics.py``); test_numerics.py plants known bugs in
these cases and shows the same rule catches them.
"""

from __future__ import annotations

from pathlib import Path

import numerics
import pytest
import torch
from equivalence import CASES, check_case, check_compile_export_emit, transformer_case
from torch import nn


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_match_reference(name: str, torch_threads: int) -> None:
    check_case(CASES[name]())


@pytest.mark.parametrize("name", list(CASES))
def test_compile_export_and_emitted_source_match(
    name: str, tmp_path: Path, torch_threads: int
) -> None:
    case = CASES[name]()
    check_compile_export_emit(case.model, case.inputs, tmp_path)


def test_transformer_shares_one_embedding_and_uses_sdpa() -> None:
    model = transformer_case().model
    assert model.tgt_embed.weight is model.src_embed.weight
    assert model.generator.weight is model.src_embed.weight
    keys = model.state_dict().keys()
    assert {"src_embed.weight", "tgt_embed.weight", "generator.weight"} <= set(keys)
    assert "encoder.1.self_attn.q_proj.weight" in keys
    assert isinstance(model.encoder, nn.ModuleList) and len(model.encoder) == 2


def test_padding_mask_changes_only_padded_keys() -> None:
    case = transformer_case()
    src, tgt, pad = case.inputs
    model = case.model.eval()
    with torch.no_grad():
        base = model(src, tgt, pad)
        changed = src.clone()
        changed[1, 5:] = (changed[1, 5:] + 1) % 50  # edit only padded tokens
        numerics.assert_same(model(changed, tgt, pad), base)  # masked keys weigh exactly 0
        changed[0, 0] = (changed[0, 0] + 1) % 50  # a real token: the output moves
        assert not torch.allclose(model(changed, tgt, pad), base)
