"""Swin (transformers' SwinForImageClassification) imported from the command line, issue 30:
its window attention (q/k/v/o projections and the relative position bias table inside it) is a
``multi_head_attention`` with ``relative_position_bias``, the layer's shifted-window mask a
``swin_shift_mask`` checked value for value, the cyclic shift a ``roll``, the window partition
and reverse ``reshape``/``transpose`` nodes; the shifted and unshifted layers of a stage are one
block whose shift is the copy's. Logits and every gradient equal to transformers' from a small
random config saved with save_pretrained, every weight re-drawn (the bias tables too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import Case, check_case
from hf_models import quiet
from lowering import redraw
from numerics import RoundingChains, assert_close

import archcomp
from archcomp.cli.main import main

transformers = pytest.importorskip("transformers")

ONE_STAGE = dict(image_size=16, patch_size=2, embed_dim=8, depths=[2], num_heads=[2])
ONE_STAGE |= {"window_size": 4, "num_labels": 5}  # an 8 x 8 map of 2 x 2 windows: no padding


def _saved(tmp_path: Path, **kw: Any) -> tuple[Any, Path]:
    quiet()
    cfg = transformers.SwinConfig(**kw)
    cfg.architectures = ["SwinForImageClassification"]
    model = transformers.SwinForImageClassification(cfg)
    redraw(model, 3)  # every weight re-drawn: a zero bias table would hide a missed bias
    folder = tmp_path / "swin"
    model.save_pretrained(folder)
    return model.eval(), folder


def _equal(model: Any, ref: Any, pixels: torch.Tensor) -> None:
    """Logits and every gradient, with transformers' own state_dict loaded strictly."""
    model.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(pixel_values=pixels), ref(pixel_values=pixels).logits
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
    case = Case(
        model,
        ref,
        (pixels,),
        lambda x: [ref(pixel_values=x).logits],
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)


def test_swin_one_stage_round_trip_from_the_cli(tmp_path: Path) -> None:
    ref, folder = _saved(tmp_path, **ONE_STAGE)
    spec, art = tmp_path / "swin.yaml", tmp_path / "swin.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    # the folder's keys are Swin's legacy ones (attention.self.query): transformers' renames
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    print(text)
    pixels = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))  # B=3, not 2
    with torch.no_grad(), RoundingChains() as chains:
        got, want = archcomp.load(art)(pixel_values=pixels), ref(pixel_values=pixels).logits
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
    _equal(archcomp.build(text), ref, pixels)
