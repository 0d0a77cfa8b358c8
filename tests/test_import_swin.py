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


@pytest.mark.parametrize("image", [16, 21])  # 21: padded to patches, then to windows
def test_swin_one_stage_round_trip_from_the_cli(tmp_path: Path, image: int) -> None:
    """Two layers, the second on windows shifted by 2; at 21 pixels the patches pad the image
    (``pad``) and the layers their 11 x 11 map to 12 x 12 windows, then crop (``index``)."""
    ref, folder = _saved(tmp_path, **(ONE_STAGE | {"image_size": image}))
    spec, art = tmp_path / "swin.yaml", tmp_path / "swin.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    # the folder's keys are Swin's legacy ones (attention.self.query): transformers' renames
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    attention = (
        "- {id: attention, op: multi_head_attention, in: {query: reshape_3, mask: shift_mask},"
    )
    assert attention in text and "relative_position_bias: 4}" in text
    shift = 'op: swin_shift_mask, in: roll, window_size: 4, shift: "${[0, 2][index]}"}'
    assert shift in text  # the copy's shift; its roll only where it shifts:
    assert (
        '- {id: roll, op: roll, when: "${[False, True][index]}", shifts: [-2, -2], dims: [1, 2]}'
        in text
    )
    assert "- {id: blocks, op: swin_layer, repeat: 2" in text
    pixels = torch.randn(
        3, 3, image, image, generator=torch.Generator().manual_seed(1)
    )  # B=3, not 2
    with torch.no_grad(), RoundingChains() as chains:
        got, want = archcomp.load(art)(pixel_values=pixels), ref(pixel_values=pixels).logits
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
    _equal(archcomp.build(text), ref, pixels)


class _Stage(torch.nn.Module):
    """A Swin stage of two layers (the second shifted) ending in patch merging, on the tokens
    of an 8 x 8 map: transformers' SwinStage, imported through torch.export."""

    def __init__(self) -> None:
        super().__init__()
        from transformers.models.swin.modeling_swin import SwinPatchMerging, SwinStage

        cfg = transformers.SwinConfig(embed_dim=8, window_size=4, num_heads=[2])
        cfg._attn_implementation = "sdpa"  # as a model's from_pretrained or __init__ sets it
        self.stage = SwinStage(cfg, 8, (8, 8), 2, 2, [0.0, 0.0], SwinPatchMerging)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 64:  # a branch on a size: torch.fx cannot trace it, torch.export can
            raise ValueError("an 8 x 8 map of tokens")
        return self.stage(x, (8, 8))[0]  # (B, 16, 16): 2 x 2 tokens merged, then 4C -> 2C


def test_swin_patch_merging_imports_as_reshape_permute_reshape(tmp_path: Path) -> None:
    """SwinPatchMerging's ``cat([x[:, row::2, col::2, :] ...], -1)`` (eight strided slices) is
    the shipped spec's reshape, permute, reshape; the stage's output and every gradient equal,
    any batch size."""
    from import_checks import round_trip

    quiet()
    torch.manual_seed(0)
    ref = _Stage().eval()
    redraw(ref, 3)
    text = round_trip(ref, (torch.randn(2, 64, 8),), dims={"B": 0})
    assert "- {id: groups, op: reshape, shape: [-1, 4, 2, 4, 2, 8]}" in text  # (B, H', 2, W', 2, C)
    assert "- {id: by_group, op: permute, dims: [0, 1, 3, 4, 2, 5]}" in text
    assert "- {id: merged, op: reshape, shape: [-1, 4, 4, 32]}" in text  # no index left
    assert "op: index" not in text and "op: concat" not in text
    model = archcomp.build(text)
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 64, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(x), ref(x)
    assert_close(got, want, chains.tolerance(torch.float32, got, want))


FOUR_STAGES = dict(image_size=32, patch_size=2, embed_dim=8, window_size=2, num_labels=5)
FOUR_STAGES |= {"depths": [2, 2, 4, 2], "num_heads": [1, 2, 4, 8]}  # maps 16, 8, 4, 2


@pytest.mark.parametrize(
    "config",
    [ONE_STAGE | {"depths": [2, 2], "num_heads": [2, 4]}, FOUR_STAGES],
    ids=["two_stages", "four_stages"],
)
def test_swin_of_several_stages_round_trips_from_the_cli(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    """Stages ending in patch merging but the last: their layers are blocks of other widths,
    heads and maps (the last stage's map one window, never shifted), merged into one stage block
    whose params each stage's call passes, lists read at the layer's index inside
    (``shift_mask_shift: "${[[0, 1], [0, 1], [0, 1, 0, 1], [0, 0]][index]}"``)."""
    ref, folder = _saved(tmp_path, **config)
    spec, art = tmp_path / "swin.yaml", tmp_path / "swin.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    stages, ws = len(config["depths"]), config["window_size"]
    side = config["image_size"] // config["patch_size"]
    shifts = [  # transformers' shift per layer: half a window every other one, where it fits
        [ws // 2 if i % 2 and side >> s > ws else 0 for i in range(n)]
        for s, n in enumerate(config["depths"])
    ]
    assert f'shift_mask_shift: "${{{shifts}[index]}}"' in text
    assert f'downsample_when: "${{{[True] * (stages - 1) + [False]}[index]}}"' in text
    side = config["image_size"]
    pixels = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), RoundingChains() as chains:
        got, want = archcomp.load(art)(pixel_values=pixels), ref(pixel_values=pixels).logits
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
    _equal(archcomp.build(text), ref, pixels)
    built = archcomp.build(text, seed=0)  # and the fixed point: its import builds the same
    again = archcomp.build(archcomp.import_module(built, (pixels,)))
    again.load_state_dict(built.state_dict(), strict=True)
    with torch.no_grad(), RoundingChains() as chains:
        got, want = again(pixels), built(pixels)
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
