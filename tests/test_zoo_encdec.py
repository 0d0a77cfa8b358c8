"""The zoo's encoder-decoders (BART, T5 v1.0 and v1.1, Whisper) beyond tests/test_checkpoints.py:
each variant a family's one mapping reads and each attention implementation transformers has
for it (eager, sdpa) loads through ``archcomp.from_pretrained`` with no spec and no mapping and
gives transformers' outputs and embedding gradients (rule of tests/NUMERICS.md); the specs'
defaults have the flagship's parameter count, as transformers' model of that config on the
meta device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numerics
import pytest
import torch
from hf_models import outputs, quiet
from hf_zoo_encdec import FAMILIES, FLAGSHIP, VARIANTS, build, make
from numerics import RoundingChains
from spec_library import LIBRARY, SPECS

import archcomp

pytest.importorskip("transformers")

# a family's first variant is its Family in hf_models, which tests/test_checkpoints.py runs with
# transformers' default attention (sdpa for all three): here eager; every other variant both
CASES = [
    pytest.param(name, variant, attn, id=f"{name}-{variant}-{attn}")
    for name, variants in VARIANTS.items()
    for i, variant in enumerate(variants)
    for attn in (("eager",) if i == 0 else ("eager", "sdpa"))
]


@pytest.mark.parametrize(("name", "variant", "attn"), CASES)
def test_variant_and_attention_outputs_and_gradients(
    name: str, variant: str, attn: str, tmp_path: Path
) -> None:
    quiet()
    family = FAMILIES[name]
    kw: dict[str, Any] = {**VARIANTS[name][variant], "attn_implementation": attn}
    hf = make(name, **kw)
    hf.save_pretrained(tmp_path)
    model = archcomp.from_pretrained(tmp_path)
    x = family.inputs(torch.Generator().manual_seed(1))
    with RoundingChains() as chains:
        want = family.hf_call(hf, x)
        got = outputs(model, x)
        for key in want:
            tol = chains.tolerance(torch.float32, got[key], want[key])
            numerics.assert_close(got[key].detach(), want[key].detach(), tol, msg=key)
        g = torch.Generator().manual_seed(2)
        weights = {k: torch.randn(v.shape, generator=g) for k, v in want.items()}
        sum((want[k] * weights[k]).sum() for k in want).backward()  # type: ignore[union-attr]
        sum((got[k] * weights[k]).sum() for k in got).backward()  # type: ignore[union-attr]
    hf_name, our_name = family.embedding
    hf_grad = dict(hf.named_parameters())[hf_name].grad
    our_grad = model.get_parameter(our_name).grad
    assert hf_grad is not None and our_grad is not None
    numerics.assert_close(our_grad, hf_grad, chains.tolerance(torch.float32), msg=our_name)


FLAGSHIPS = [
    pytest.param(name, i, id=f"{name}-{i}")
    for name, sizes in FLAGSHIP.items()
    for i in range(len(sizes))
]


@pytest.mark.parametrize(("name", "i"), FLAGSHIPS)
def test_flagship_count_is_transformers_on_meta(name: str, i: int) -> None:
    """The spec's defaults (and each -p variant) are the published model: transformers' of
    that config, built on the meta device, has as many parameters (ties counted once)."""
    config, params = FLAGSHIP[name][i]
    with torch.device("meta"):
        hf = build(name, **config)
    count = sum(p.numel() for p in hf.parameters())
    assert archcomp.summary(SPECS / f"{name}.yaml", params).parameters == count
    if i == 0:
        assert count == LIBRARY[name][0]


V1_1 = {"feed_forward_proj": "gated-gelu", "scale_decoder_outputs": False}


@pytest.mark.parametrize("tied", [False, True], ids=["v1_1", "v1_1_tied"])
def test_t5_v1_1_exports_to_transformers(tied: bool, tmp_path: Path) -> None:
    """T5 v1.1 written by ``save_pretrained`` (the variant in config.json, the LM head of its
    own when untied) loads into transformers with no missing or unexpected keys and computes
    the same logits."""
    quiet()
    family = FAMILIES["t5"]
    params = {**family.params, **V1_1, "tie_word_embeddings": tied}
    model = archcomp.build(SPECS / "t5.yaml", params=params, seed=3).eval()
    archcomp.save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["feed_forward_proj"] == "gated-gelu"
    assert (config["tie_word_embeddings"], config["scale_decoder_outputs"]) == (tied, False)
    hf, info = family.cls().from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set(), info
    assert (hf.lm_head.weight is hf.shared.weight) == tied
    x = family.inputs(torch.Generator().manual_seed(1))
    with torch.no_grad(), RoundingChains() as chains:
        want = family.hf_call(hf.eval(), x)["logits"]
        got = outputs(model, x)["logits"]
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want), msg="logits")


def test_t5_older_checkpoint_with_a_cross_attention_bias_table(tmp_path: Path) -> None:
    """Older T5 checkpoints carry decoder.block.0.layer.1.EncDecAttention.relative_attention_bias
    (transformers ignores it on loading): the mapping drops it, the outputs are unchanged."""
    from safetensors.torch import load_file, save_file

    quiet()
    family = FAMILIES["t5"]
    hf = make("t5")
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    key = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"
    tensors[key] = torch.randn(8, 4)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = archcomp.from_pretrained(tmp_path)
    x = family.inputs(torch.Generator().manual_seed(1))
    with torch.no_grad(), RoundingChains() as chains:
        want = family.hf_call(hf, x)["logits"]
        got = outputs(model, x)["logits"]
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want), msg="logits")
