"""Issue 30's first must-show: every family of the zoo library round-trips from the command line.

For each family of tests/hf_models.py's ``FAMILIES`` (the zoo's 23 transformers model types;
ResNet's basic and bottleneck blocks, T5 v1.0 and v1.1 apart): the family's small random
transformers model, every weight re-drawn, saved with save_pretrained; ``archcomp import --hf
FOLDER -o spec.yaml``, then ``archcomp convert FOLDER --spec spec.yaml -o model.safetensors``,
both through the CLI's ``main``; the artifact loaded and its first output compared with
transformers' on the spec's inputs, forward and the gradient of the family's chosen weight (the
per-family tests, tests/test_import_*.py, compare every gradient). A family the importer does
not handle yet is an ``xfail(strict=True)`` with the first line of its refusal: this list is
issue 30's to-do list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hf_models import FAMILIES, Family, quiet
from lowering import redraw
from numerics import RoundingChains, assert_close

import archcomp
from archcomp.cli.main import main

transformers = pytest.importorskip("transformers")

# the families' transformers model types: the zoo library's 23
MODEL_TYPES = {
    "gpt2", "bert", "llama", "mistral", "vit", "resnet", "qwen2", "qwen3", "gemma2",
    "gemma3_text", "phi3", "gpt_neox", "mixtral", "deepseek_v3", "olmo2", "t5", "bart",
    "whisper", "clip", "convnext", "swin", "dinov2", "mamba",
}  # fmt: skip
# T5's gated-GELU v1.1 (an LM head of its own) beside the table's v1.0 (ReLU, tied)
T5_V1_1 = {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
# the cases this branch refuses, with the refusal's first line (and its cause): issue 30's to-do
TODO: dict[str, str] = {}
# the table's batch keys that are not transformers' argument names
RENAMED = {"ids": "input_ids", "images": "pixel_values", "x": "pixel_values"}


def _make(name: str, **config: Any) -> Any:
    """The family's small random transformers model, every weight re-drawn, eval mode."""
    quiet()
    torch.manual_seed(0)
    family = FAMILIES[name]
    if config:  # a variant of an encoder-decoder family's config
        from hf_zoo_encdec import make

        return make(name, **config)
    model = family.make()
    if family.make.__module__ == "hf_models":  # the first table's models keep their init
        redraw(model, 3)
    return model.eval()


def _case(name: str, **config: Any) -> Any:
    case = f"{name}_v1_1" if config else name
    marks = [pytest.mark.xfail(strict=True, reason=TODO[case])] if case in TODO else []
    return pytest.param(name, config, id=case, marks=marks)


CASES = [_case(n) for n in FAMILIES] + [_case("t5", **T5_V1_1)]


def batch(family: Family, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The family's test batch as the spec's inputs (transformers' forward argument names)."""
    x = family.inputs(torch.Generator().manual_seed(1))
    x = {RENAMED.get(k, k): v for k, v in x.items()}
    if "padding_mask" in x:  # True at padding; transformers' attention_mask: 1 where real
        x["attention_mask"] = (~x.pop("padding_mask")).long()
    if family.name == "dinov2_base":  # the table's 224 x 224 is resized; import traces 56
        x["pixel_values"] = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    return {n: x[n] for n in names}


def test_the_cases_are_the_zoo_families() -> None:
    types = {FAMILIES[p.values[0]].cls().config_class.model_type for p in CASES}
    assert types == MODEL_TYPES


@pytest.mark.parametrize(("name", "config"), CASES)
def test_family_round_trips_from_the_cli(
    tmp_path: Path, name: str, config: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ref = _make(name, **config)
    folder, spec, art = tmp_path / "hf", tmp_path / "spec.yaml", tmp_path / "model.safetensors"
    ref.save_pretrained(folder)
    for argv in (
        ["import", "--hf", str(folder), "-o", str(spec)],
        ["convert", str(folder), "--spec", str(spec), "-o", str(art)],
    ):
        assert main(argv) == 0, capsys.readouterr().err  # the refusal, in the report
    model = archcomp.load(art).eval()
    x = batch(FAMILIES[name], model.input_names)
    first = model.output_names[0]
    weight = FAMILIES[name].embedding[0]  # transformers' name: the spec's too
    with RoundingChains() as chains:
        got = model(**x)
        got = got[first] if isinstance(got, dict) else got
        want = getattr(ref(**x), first)
        out_tol = chains.tolerance(torch.float32, got, want)
        scale = torch.linspace(0.5, 1.5, want.numel()).view_as(want)
        (got * scale).sum().backward()
        (want * scale).sum().backward()
    assert_close(got, want, out_tol, msg=first)
    theirs = ref.get_parameter(weight).grad
    ours = model.get_parameter(weight).grad
    assert theirs is not None and ours is not None
    assert_close(ours, theirs, chains.tolerance(torch.float32), msg=weight)
