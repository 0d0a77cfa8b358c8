"""Strict by default: a checkpoint that does not fit its mapping and spec exactly is refused,
with every gap named, and nothing is written (convert) or returned (from_pretrained).

The checkpoints are small GPT-2 folders exported from the spec, then edited with safetensors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import archcomp
from archcomp.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"N": 2, "d_model": 32, "h": 4, "vocab": 61, "context": 16}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good") / "gpt2"
    archcomp.save_pretrained(archcomp.build("gpt2", SMALL, seed=0), folder)
    return folder


def _edited(good: Path, tmp_path: Path, edit: object) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(good, folder)
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)  # type: ignore[operator]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _refused(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], code: int = 1
) -> str:
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(folder), "-o", str(out)]) == code
    assert not out.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_an_extra_checkpoint_tensor_is_refused(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _edited(
        good, tmp_path, lambda t: t.update({"transformer.h.0.attn.c_attn.weigth": torch.zeros(2)})
    )
    err = _refused(folder, tmp_path, capsys)
    assert (
        "error: model.safetensors: tensor 'transformer.h.0.attn.c_attn.weigth' is used by no "
        "rule of " in err
    )
    assert "did you mean" not in err  # nothing is missing that it could be


def test_a_missing_tensor_is_named_with_the_rule_that_needs_it(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def rename(t: dict[str, torch.Tensor]) -> None:
        t["transformer.h.1.mlp.c_fc.bais"] = t.pop("transformer.h.1.mlp.c_fc.bias")

    err = _refused(_edited(good, tmp_path, rename), tmp_path, capsys)
    assert (
        "specs/hf/gpt2.yaml:52:3: error: model tensor 'h_.1.mlp.fc.bias' needs checkpoint "
        "tensor 'transformer.h.1.mlp.c_fc.bias', which model.safetensors lacks\n"
    ) in err
    assert "hint: did you mean 'transformer.h.1.mlp.c_fc.bais'?" in err
    assert "tensor 'transformer.h.1.mlp.c_fc.bais' is used by no rule" in err
    assert "hint: did you mean 'transformer.h.1.mlp.c_fc.bias'?" in err


def test_a_tie_is_checked_to_hold_in_the_checkpoint(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held = _edited(
        good, tmp_path, lambda t: t.update({"lm_head.weight": t["transformer.wte.weight"].clone()})
    )
    model = archcomp.from_pretrained(held)  # an older save that stored the head: same values
    assert model.lm_head.weight is model.wte.weight
    shutil.rmtree(held)

    def untie(t: dict[str, torch.Tensor]) -> None:
        t["lm_head.weight"] = t["transformer.wte.weight"] + 0.5

    err = _refused(_edited(good, tmp_path, untie), tmp_path, capsys)
    assert (
        "error: checkpoint tensor 'lm_head.weight' is tied to 'transformer.wte.weight', but "
        "their values differ (max difference 0.5)"
    ) in err
    assert "a checkpoint with an untied head does not fit a spec that ties it" in err


def test_mixed_dtypes_need_an_explicit_cast(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def half(t: dict[str, torch.Tensor]) -> None:
        t["transformer.ln_f.weight"] = t["transformer.ln_f.weight"].half()

    folder = _edited(good, tmp_path, half)
    err = _refused(folder, tmp_path, capsys, code=2)
    assert (
        "the checkpoint's floating tensors mix dtypes: F16 ('transformer.ln_f.weight'), F32" in err
    )
    model = archcomp.from_pretrained(folder, dtype="float32")
    assert model.ln_f.weight.dtype == torch.float32


def test_an_integer_tensor_where_the_model_has_floats(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def ints(t: dict[str, torch.Tensor]) -> None:
        t["transformer.ln_f.bias"] = t["transformer.ln_f.bias"].long()

    err = _refused(_edited(good, tmp_path, ints), tmp_path, capsys)
    assert (
        "error: checkpoint tensor 'transformer.ln_f.bias' is I64, model tensor 'ln_f.bias' is "
        "float32" in err
    )


def test_config_sizes_that_disagree_with_the_tensors(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(good, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 60
    (folder / "config.json").write_text(json.dumps(config))
    err = _refused(folder, tmp_path, capsys)
    assert (
        "checkpoint tensor 'transformer.wte.weight' is [61, 32], but model tensor 'wte.weight' "
        "is [60, 32]" in err
    )


def test_a_pickle_beside_safetensors_is_ignored_and_never_opened(
    good: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(good, folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02 not even a pickle")
    archcomp.from_pretrained(folder)  # model.safetensors is read; the .bin is not touched


def test_the_checkpoint_argument_must_be_a_folder(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(good / "model.safetensors", tmp_path, capsys, code=2)
    assert "is a file; a checkpoint is a folder with config.json and model.safetensors" in err
    (tmp_path / "weights.pt").write_bytes(b"PK\x03\x04")
    err = _refused(tmp_path / "weights.pt", tmp_path, capsys, code=2)
    assert "weights.pt is a pickle (torch.save) file; archcomp never unpickles" in err


def test_export_refuses_a_model_its_mapping_cannot_describe(tmp_path: Path) -> None:
    """A spec named gpt2 whose final norm differs is not what GPT2LMHeadModel computes."""
    spec = (ROOT / "specs" / "gpt2.yaml").read_text()
    other = spec.replace("{id: ln_f, op: layer_norm}", "{id: ln_f, op: layer_norm, eps: 1.0e-3}")
    other = other.replace("imports: [{path: blocks/gpt.yaml", "imports: [{library: gpt")
    assert other != spec
    with pytest.raises(archcomp.UsageError) as err:
        archcomp.save_pretrained(archcomp.build(other, SMALL, seed=0), tmp_path / "out")
    assert "the model's spec is not gpt2.yaml at its params, so a GPT2LMHeadModel" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_param_the_config_does_not_carry(tmp_path: Path) -> None:
    mapping = (ROOT / "specs" / "hf" / "gpt2.yaml").read_text()
    mapping = mapping.replace("  dropout: resid_pdrop\n", "").replace('"${dropout}"', "0.1")
    path = tmp_path / "no_dropout.yaml"
    path.write_text(mapping)
    model = archcomp.build("gpt2", {**SMALL, "dropout": 0.0}, seed=0)
    with pytest.raises(archcomp.UsageError) as err:
        archcomp.save_pretrained(model, tmp_path / "out", mapping=path)
    assert str(err.value).startswith("the model's param dropout is 0.0, but ")
    assert str(err.value).endswith(
        "no_dropout.yaml carries no config.json field for it (a GPT2LMHeadModel would have 0.1)"
    )
    assert not (tmp_path / "out").exists()


def test_cli_usage_errors(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out.safetensors")
    assert main(["convert", str(good), "--spec", str(tmp_path / "nosuch.yaml"), "-o", out]) == 2
    assert "nosuch.yaml' does not exist" in capsys.readouterr().err
    assert main(["convert", str(good), "-o", "-"]) == 2
    assert "'-' (stdout) is not supported for -o" in capsys.readouterr().err
    assert main(["export", "nosuch", "--to", "hf", "-o", str(tmp_path / "x")]) == 2
    assert "no shipped spec named 'nosuch'" in capsys.readouterr().err
    assert main(["export", "gpt2", "--to", "onnx", "-o", str(tmp_path / "x")]) == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
    assert main(["--quiet", "convert", str(good), "-o", out]) == 0
    assert capsys.readouterr().out == ""  # --quiet: no "wrote" line
    assert not (tmp_path / "x").exists()
