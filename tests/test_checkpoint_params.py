"""``convert -p NAME=VALUE`` and ``from_pretrained(params=...)``: spec params a checkpoint does
not fix (a convolutional net's image size), refused for those it does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hf_models import FAMILIES, save

import archcomp
from archcomp import UsageError
from archcomp.cli import main

pytest.importorskip("transformers")


def test_from_pretrained_sets_a_free_param(tmp_path: Path) -> None:
    """ResNet's image size is free: the weights load at any size, the logits equal
    transformers' at that size (a planted 'params ignored' builds the default 224 and fails)."""
    hf = save(FAMILIES["resnet18"], tmp_path)
    model = archcomp.from_pretrained(tmp_path, params={"image": 64})
    assert model.spec["params"]["image"] == 64
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, hf(pixel_values=x).logits, rtol=1e-4, atol=1e-4)


def test_a_param_the_checkpoint_fixes_is_refused(tmp_path: Path) -> None:
    save(FAMILIES["llama"], tmp_path)
    with pytest.raises(UsageError, match="param 'd_model' is fixed by the checkpoint"):
        archcomp.from_pretrained(tmp_path, params={"d_model": 64})


def test_convert_p(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(FAMILIES["resnet18"], tmp_path / "hf")
    out = tmp_path / "r.safetensors"
    assert main(["convert", str(tmp_path / "hf"), "-p", "image=96", "-o", str(out)]) == 0
    assert archcomp.load(out).spec["params"]["image"] == 96
    assert main(["convert", str(tmp_path / "hf"), "-p", "width=3", "-o", str(tmp_path / "w")]) == 2
    assert "param 'width' is fixed by the checkpoint" in capsys.readouterr().err
