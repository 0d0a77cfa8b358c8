"""Bare ``nn.Parameter``s read in a forward (archcomp/importer/parameters.py): each a
``parameter`` node with ``key: self``, keyed by its own name, so the module's state_dict loads
strictly. ViT round-trips from the command line (`import --hf`, then `convert --spec`), logits
and every gradient equal to transformers'; small random configs, every weight re-drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import Case, check_case
from hf_models import quiet
from import_checks import Read
from lowering import redraw
from numerics import RoundingChains, assert_close

import archcomp
from archcomp.cli.main import main

transformers = pytest.importorskip("transformers")

VIT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    image_size=16,
    patch_size=4,
    num_labels=5,
)


def _saved(tmp_path: Path, config: str, arch: str, **kw: Any) -> tuple[Any, Path]:
    quiet()
    cfg = getattr(transformers, config)(**kw)
    cfg.architectures = [arch]
    model = getattr(transformers, arch)(cfg)
    redraw(model, 3)  # every weight re-drawn: a cls_token of zeros would hide a missed add
    folder = tmp_path / arch.lower()
    model.save_pretrained(folder)
    return model.eval(), folder


def _equal(model: Any, ref: Any, pixels: torch.Tensor, fields: list[str], unread: Any = ()) -> None:
    """Outputs and every gradient, with ref's whole state_dict loaded strictly (``unread``:
    parameters no forward reads, held by ``unused: true`` nodes: no gradient to compare)."""
    model.load_state_dict(ref.state_dict(), strict=True)
    assert list(model.output_names) == fields
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(pixel_values=pixels), ref(pixel_values=pixels)
    for field in fields:
        g, w = (got[field] if isinstance(got, dict) else got), getattr(want, field)
        assert_close(g, w, chains.tolerance(torch.float32, g, w))
    ref.train(model.training)
    model = Read(model, set(unread))  # dinov2's mask_token: held (unused: true), no gradient
    case = Case(
        model,
        ref,
        (pixels,),
        lambda x: [getattr(ref(pixel_values=x), f) for f in fields],
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)


def test_vit_round_trip_from_the_cli(tmp_path: Path) -> None:
    """ViT's ``cls_token`` and ``position_embeddings``: parameter nodes keyed by their names,
    the class token expanded to the batch by ``expand``."""
    ref, folder = _saved(tmp_path, "ViTConfig", "ViTForImageClassification", **VIT)
    spec, art = tmp_path / "vit.yaml", tmp_path / "vit.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    # the folder's keys are ViT's legacy ones (encoder.layer.0.attention.attention.query):
    # transformers' scoped renames of its ViTModel, chained, give the module's
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    assert "- {id: cls_token, op: parameter, shape: [1, 1, 32], key: self}" in text
    assert "op: expand, in: {x: cls_token, like: patch_embeddings}, shape: [B, -1, -1]}" in text
    assert "- {id: position_embeddings, op: parameter, shape: [1, 17, 32], key: self}" in text
    pixels = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))  # B=3, not 2
    with torch.no_grad(), RoundingChains() as chains:
        got, want = archcomp.load(art)(pixel_values=pixels), ref(pixel_values=pixels).logits
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
    _equal(archcomp.build(text), ref, pixels, ["logits"])


def test_a_bare_parameter_of_a_module_of_ones_own(tmp_path: Path) -> None:
    """A module's own parameters read by ``*`` (a gain, DINOv2's ``lambda1`` pattern) and by
    ``+``, through torch.fx: keyed by their names; a frozen one keeps ``trainable: false``."""
    from import_checks import round_trip

    class Scale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lambda1 = torch.nn.Parameter(torch.randn(8))
            self.bias = torch.nn.Parameter(torch.randn(8))
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * self.lambda1 + self.bias

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer_scale = Scale()
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.layer_scale(x))

    net = Net()
    text = round_trip(net, (torch.randn(2, 8),))
    assert "- {id: lambda1, op: parameter, shape: [8], key: self}" in text
    assert "- {id: bias, op: parameter, shape: [8], key: self}" in text
    net.layer_scale.bias.requires_grad_(False)
    frozen = archcomp.import_module(net, (torch.randn(2, 8),))
    assert "- {id: bias, op: parameter, shape: [8], key: self, trainable: false}" in frozen
    model = archcomp.build(frozen)
    model.load_state_dict(net.state_dict(), strict=True)
    assert not model.get_parameter("layer_scale.bias").requires_grad
    x = torch.randn(3, 8)
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(x), net(x)
    assert_close(got, want, chains.tolerance(torch.float32, got, want))


def test_dinov2_round_trip(tmp_path: Path) -> None:
    """DINOv2's class token, position table and each layer's ``Dinov2LayerScale`` (a
    ``layer_scale`` whose gain is ``lambda1``): last_hidden_state and pooler_output equal,
    every gradient too, transformers' state_dict loaded strictly."""
    from archcomp.importer.hf import import_hf

    extra = dict(image_size=16, patch_size=4, mlp_ratio=2, layerscale_value=0.5)
    small = {k: v for k, v in VIT.items() if k not in ("patch_size", "num_labels", "image_size")}
    ref, folder = _saved(tmp_path, "Dinov2Config", "Dinov2Model", **small, **extra)
    text = import_hf(folder)
    assert "- {id: layer_scale1, op: layer_scale, gain_name: lambda1}" in text
    # mask_token is read only with bool_masked_pos (masked image modelling): no traced call
    # reads it, a node holds it, so transformers' whole state_dict loads strictly
    held = (
        '- {id: mask_token, op: parameter, shape: [1, "${hidden_size}"], key: self, unused: true}'
    )
    assert held in text
    pixels = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    fields = ["last_hidden_state", "pooler_output"]
    model = archcomp.build(text)
    _equal(model, ref, pixels, fields, unread=["embeddings.mask_token"])
    # and from the command line: convert --spec of the saved folder loads every key
    spec, art = tmp_path / "dinov2.yaml", tmp_path / "dinov2.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    loaded = archcomp.load(art)
    assert torch.equal(loaded.get_parameter("embeddings.mask_token"), ref.embeddings.mask_token)
    with torch.no_grad(), RoundingChains() as chains:
        got, want = loaded(pixel_values=pixels), ref(pixel_values=pixels)
    for field in fields:
        g, w = got[field], getattr(want, field)
        assert_close(g, w, chains.tolerance(torch.float32, g, w))


def test_emit_python_writes_a_parameter_keyed_by_its_id(tmp_path: Path) -> None:
    """--emit-python: a ``key: self`` parameter is an ``nn.Parameter`` attribute of its block's
    class (one no node reads, ``unused: true``, too); the written module loads the artifact
    strictly and computes the same."""
    import importlib.util

    text = """archcomp: 1
name: m
dims: {B: 2}
inputs:
  x: {shape: [B, 4, 8]}
blocks:
  emb:
    inputs: [x]
    nodes:
      - {id: cls_token, op: parameter, shape: [1, 1, 8], key: self}
      - {id: cls_b, op: expand, in: {x: cls_token, like: x}, shape: [B, -1, -1]}
      - {id: tokens, op: concat, in: [cls_b, x], dim: 1}
      - {id: ls, op: layer_scale, gain_name: lambda1}
      - {id: held, op: parameter, shape: [2], key: self, unused: true}
    outputs: ls
nodes:
  - {id: embeddings, op: emb}
  - {id: p, op: parameter, shape: [8], key: self, trainable: false}
  - {id: a, op: add, in: [embeddings, p]}
outputs: {y: a}
"""
    spec, art, code = tmp_path / "m.yaml", tmp_path / "m.safetensors", tmp_path / "m_emitted.py"
    spec.write_text(text)
    argv = ["build", str(spec), "-o", str(art), "--emit-python", str(code)]
    assert main(argv) == 0
    loader = importlib.util.spec_from_file_location("m_emitted", code)
    assert loader is not None and loader.loader is not None
    mod = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(mod)
    from safetensors.torch import load_file

    emitted = mod.M()
    emitted.load_state_dict(load_file(art), strict=True)
    assert not emitted.p.requires_grad
    assert "embeddings.held" in load_file(art)
    x = torch.randn(3, 4, 8)
    assert torch.equal(emitted(x), archcomp.load(art)(x))


def test_a_built_key_self_parameter_imports_back_to_itself() -> None:
    """The fixed point: a built model's ``key: self`` parameters (a gain of its own, in a block
    and at the top) import back as such nodes; the same keys, values and outputs."""
    text = """archcomp: 1
name: m
inputs:
  x: {shape: [2, 5, 8]}
blocks:
  scale:
    inputs: [x]
    nodes:
      - {id: lambda1, op: parameter, shape: [8], key: self}
      - {id: mul, op: mul, in: [x, lambda1]}
    outputs: mul
nodes:
  - {id: layer_scale, op: scale}
  - {id: bias, op: parameter, shape: [8], key: self}
  - {id: add, op: add, in: [layer_scale, bias]}
outputs: {y: add}
"""
    built = archcomp.build(text, seed=0)
    x = torch.randn(2, 5, 8)
    again = archcomp.import_module(built, (x,))
    assert "- {id: lambda1, op: parameter, shape: [8], key: self}" in again
    assert "- {id: bias, op: parameter, shape: [8], key: self}" in again
    model = archcomp.build(again)
    model.load_state_dict(built.state_dict(), strict=True)
    assert list(model.state_dict()) == ["bias", "layer_scale.lambda1"]
    assert torch.equal(model(x), built(x))


def test_a_tensor_no_forward_reads_is_held_by_an_unused_node() -> None:
    """torch.fx's import of a module whose own parameter and float buffer its forward never
    reads: each a node with ``unused: true`` (no ``unused-node`` error), so the module's whole
    state_dict loads strictly; without the flag such a node is refused."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(8, 3)
            self.mask_token = torch.nn.Parameter(torch.randn(1, 8))
            self.register_buffer("stat", torch.randn(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    net = Net()
    text = archcomp.import_module(net, (torch.randn(2, 8),))
    assert "- {id: mask_token, op: parameter, shape: [1, 8], key: self, unused: true}" in text
    assert "- {id: stat, op: buffer, shape: [3], key: self, unused: true}" in text
    model = archcomp.build(text)
    model.load_state_dict(net.state_dict(), strict=True)
    assert torch.equal(model.get_buffer("stat"), net.stat)
    x = torch.randn(4, 8)
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(x), net(x)
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
    with pytest.raises(archcomp.SpecError, match="node is never used"):
        archcomp.build(text.replace(", unused: true", "", 1))
