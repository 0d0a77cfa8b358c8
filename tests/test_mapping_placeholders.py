"""Mapping placeholders over any list index (a layer's experts beside the layers) and 0-d
checkpoint tensors, on a checkpoint written here (no transformers model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import archcomp
from archcomp import SpecError

SPEC = """archcomp: 1
name: moe
params: {N: 2, E: 3, d: 4}
inputs: {x: [B, "${d}"]}
blocks:
  expert:
    params: {d: 4}
    inputs: [x]
    nodes: [{id: w1, op: linear, out_features: "${d}", bias: false}]
    outputs: w1
  layer:
    params: {E: 3, d: 4}
    inputs: [x]
    nodes: [{id: experts, op: expert, repeat: "${E}", d: "${d}"}]
    outputs: experts
nodes:
  - {id: layers, op: layer, repeat: "${N}", E: "${E}", d: "${d}"}
  - {id: scale, op: parameter, shape: [1]}
  - {id: y, op: mul, in: [layers, scale]}
outputs: y
"""
MAPPING = """archcomp_mapping: 1
spec: moe.yaml
checkpoint: {model_type: tinymoe, architecture: TinyMoe}
params: {N: num_layers, E: num_experts, d: hidden}
tensors:
  model.layers.{i}.experts.{e}.w1.weight: layers.{i}.experts.{e}.w1.weight
  logit_scale: {to: scale.weight, transforms: [{reshape: {from: [], to: [1]}}]}
"""


def _checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    folder.mkdir()
    config = {"model_type": "tinymoe", "architectures": ["TinyMoe"]}
    config.update(num_layers=2, num_experts=3, hidden=4)
    (folder / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(0)
    names = [f"model.layers.{i}.experts.{e}.w1.weight" for i in range(2) for e in range(3)]
    tensors = {n: torch.randn(4, 4, generator=g) for n in names}
    tensors["logit_scale"] = torch.tensor(2.5)  # 0-d, as CLIP's
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def _files(tmp_path: Path, mapping: str = MAPPING) -> tuple[Path, Path]:
    (tmp_path / "moe.yaml").write_text(SPEC)
    (tmp_path / "moe.hf.yaml").write_text(mapping)
    return tmp_path / "moe.yaml", tmp_path / "moe.hf.yaml"


def test_layer_and_expert_placeholders_and_a_0d_tensor(tmp_path: Path) -> None:
    """Each (layer, expert) weight lands on its own copy, the 0-d scale becomes [1], and export
    writes the same keys, shapes and values back."""
    tensors = _checkpoint(tmp_path / "ck")
    spec, mapping = _files(tmp_path)
    model = archcomp.from_pretrained(tmp_path / "ck", spec=spec, mapping=mapping)
    for i in range(2):
        for e in range(3):
            got = model.get_parameter(f"layers.{i}.experts.{e}.w1.weight")
            assert torch.equal(got, tensors[f"model.layers.{i}.experts.{e}.w1.weight"])
    assert torch.equal(model.get_parameter("scale.weight"), torch.tensor([2.5]))
    archcomp.save_pretrained(model, tmp_path / "back", mapping=mapping)
    with safe_open(str(tmp_path / "back" / "model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == sorted(tensors)
        for name in tensors:
            assert torch.equal(f.get_tensor(name), tensors[name]), name


def test_swapped_placeholders_fail(tmp_path: Path) -> None:
    """A planted bug, the two indices swapped on one side, is caught: layer 2 does not exist."""
    _checkpoint(tmp_path / "ck")
    right = "w1.weight: layers.{i}.experts.{e}.w1.weight"
    swapped = MAPPING.replace(right, "w1.weight: layers.{e}.experts.{i}.w1.weight")
    assert swapped != MAPPING
    spec, mapping = _files(tmp_path, swapped)
    with pytest.raises(SpecError, match=r"layers\.2\.experts"):
        archcomp.from_pretrained(tmp_path / "ck", spec=spec, mapping=mapping)
