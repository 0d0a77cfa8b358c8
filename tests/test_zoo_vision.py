"""The zoo's vision specs at their published sizes: each spec's defaults have the parameter
count of transformers' model of the flagship config, built on the meta device (nothing
allocated), and tests/spec_library.py's LIBRARY records that count. The equivalence and
round-trip tests of these families are tests/test_checkpoints.py's, on tests/hf_zoo_vision.py.
"""

from __future__ import annotations

from pathlib import Path

import numerics
import pytest
import torch
from hf_models import FAMILIES, outputs, quiet, save  # first: it imports hf_zoo_vision
from hf_zoo_vision import (
    FLAGSHIP,
    clip_inputs,
    clip_model,
    dinov2_masked_inputs,
    flagship_parameters,
    swin_model,
)
from numerics import RoundingChains
from spec_library import LIBRARY

import archcomp

SPECS = Path(__file__).resolve().parent.parent / "specs"

pytest.importorskip("transformers")


@pytest.mark.parametrize("name", sorted(FLAGSHIP))
def test_defaults_have_the_published_parameter_count(name: str) -> None:
    assert name in FAMILIES
    want = flagship_parameters(name)
    assert archcomp.summary(SPECS / f"{name}.yaml").parameters == want
    assert LIBRARY[name][0] == want


ATTENTION = [n for n in ("dinov2_base", "swin_tiny", "clip_vit_b32") if n in FAMILIES]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", ATTENTION)
def test_equal_to_eager_and_sdpa_attention(name: str, attn: str, tmp_path: Path) -> None:
    """The loaded model equals transformers' with either attention implementation."""
    family = FAMILIES[name]
    hf = save(family, tmp_path)
    hf.set_attn_implementation(attn)
    assert hf.config._attn_implementation == attn
    model = archcomp.from_pretrained(tmp_path)
    x = family.inputs(torch.Generator().manual_seed(4))
    with torch.no_grad(), RoundingChains() as chains:
        want = family.hf_call(hf, x)
        got = outputs(model, x)
    assert set(got) == set(want)
    for key in want:
        tol = chains.tolerance(torch.float32, got[key], want[key])
        numerics.assert_close(got[key], want[key], tol, msg=key)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_dinov2_with_and_without_bool_masked_pos(attn: str, tmp_path: Path) -> None:
    """transformers' Dinov2Model takes bool_masked_pos or not; the spec by -p masking: the
    shipped default's forward takes pixel_values alone (the mask token stays a weight,
    unread), masking=true's also bool_masked_pos. Each equals transformers called the same
    way, outputs and the gradients of the image and of the mask token (none without masks);
    a planted bug that ignores the mask fails the second."""
    family = FAMILIES["dinov2_base"]
    hf = save(family, tmp_path)
    hf.set_attn_implementation(attn)
    plain = archcomp.from_pretrained(tmp_path)
    masked = archcomp.from_pretrained(tmp_path, params={"masking": True})
    assert plain.input_names == ("pixel_values",)
    assert masked.input_names == ("pixel_values", "bool_masked_pos")
    for model, make in ((plain, family.inputs), (masked, dinov2_masked_inputs)):
        x = make(torch.Generator().manual_seed(6))
        xa = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in x.items()}
        xb = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in x.items()}
        hf.zero_grad()
        with RoundingChains() as chains:
            want = family.hf_call(hf, xb)
            got = outputs(model, xa)
            g = torch.Generator().manual_seed(7)
            weights = {k: torch.randn(v.shape, generator=g) for k, v in want.items()}
            sum((want[k] * weights[k]).sum() for k in want).backward()
            sum((got[k] * weights[k]).sum() for k in got).backward()
        for key in want:
            tol = chains.tolerance(torch.float32, got[key], want[key])
            numerics.assert_close(got[key], want[key], tol, msg=key)
        tol = chains.tolerance(torch.float32)
        numerics.assert_close(xa["pixel_values"].grad, xb["pixel_values"].grad, tol, msg="dx")
        ours, theirs = model.mask_token.weight.grad, hf.embeddings.mask_token.grad
        if "bool_masked_pos" in x:
            assert ours is not None and theirs is not None
            numerics.assert_close(ours, theirs.reshape(ours.shape), tol, msg="mask token")
        else:
            assert ours is None and theirs is None


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_swin_pads_maps_that_are_no_whole_number_of_windows(attn: str, tmp_path: Path) -> None:
    """A 75 x 75 image: padded to 76 for its 2 x 2 patches, then maps of 38, 19, 10 and 5
    patches, each padded to whole windows of 4 (40, 20, 12, 8) and cropped back, the odd 19
    padded to 20 before patch merging; every stage shifts its second layer. Outputs, the
    image's gradient and the export back into transformers equal transformers' (which pads
    the same way); a planted bug that pads before the first row fails."""
    quiet()
    hf = swin_model(75, [2, 2, 2, 2]).eval()
    hf.save_pretrained(tmp_path / "hf")
    hf.set_attn_implementation(attn)
    model = archcomp.from_pretrained(tmp_path / "hf")
    p = model.spec["params"]
    assert (p["image"], p["res"], p["res2"], p["res3"], p["res4"]) == (75, 38, 19, 10, 5)
    x = torch.randn(2, 3, 75, 75, generator=torch.Generator().manual_seed(8))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with RoundingChains() as chains:
        want = hf(pixel_values=xb).logits
        got = model(xa).logits
        g = torch.randn(want.shape, generator=torch.Generator().manual_seed(9))
        (want * g).sum().backward()
        (got * g).sum().backward()
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want), msg="logits")
    numerics.assert_close(xa.grad, xb.grad, chains.tolerance(torch.float32), msg="dx")
    archcomp.save_pretrained(model, tmp_path / "back")
    again = type(hf).from_pretrained(tmp_path / "back", attn_implementation=attn).eval()
    with torch.no_grad():  # both without autograd: SDPA may pick another kernel with it
        numerics.assert_same(again(pixel_values=x).logits, hf(pixel_values=x).logits)


def test_clip_pools_at_the_first_eos_token_id(tmp_path: Path) -> None:
    """A config whose eos_token_id is not 2 pools each text at that id's first occurrence (a
    padding id larger than it does not move the pooled position, as the largest id would)."""
    family = FAMILIES["clip_vit_b32"]
    quiet()
    torch.manual_seed(0)
    hf = clip_model(59)()
    hf.save_pretrained(tmp_path)
    model = archcomp.from_pretrained(tmp_path)
    assert model.spec["params"]["eos_token_id"] == 59
    x = clip_inputs(59)(torch.Generator().manual_seed(5))
    x["input_ids"][1, 6:] = 60  # padding ids above the end-of-text id
    with torch.no_grad(), RoundingChains() as chains:
        want = family.hf_call(hf, x)
        got = outputs(model, x)
    for key in want:
        tol = chains.tolerance(torch.float32, got[key], want[key])
        numerics.assert_close(got[key], want[key], tol, msg=key)
