"""Published weights end to end, per shipped family: a transformers model from a small random
config, saved with save_pretrained, converted by ``archcomp convert`` (and loaded by
``archcomp.from_pretrained``), computes the same outputs and gradients in eval mode; an
archcomp model exported with ``archcomp export --to hf`` loads into transformers with no
missing or unexpected keys and equal outputs.

Tolerances: the rule of tests/numerics.py, its rounding chains counted over both models;
weights that must come through unchanged are compared bitwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numerics
import pytest
import torch
from hf_models import FAMILIES, Family, outputs, quiet, save, shipped
from numerics import RoundingChains

import archcomp
from archcomp.cli import main

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("transformers")


def _batch(family: Family) -> dict[str, torch.Tensor]:
    return family.inputs(torch.Generator().manual_seed(1))


def _compare(
    family: Family, hf: object, ours: torch.nn.Module, x: dict[str, torch.Tensor] | None = None
) -> dict[str, float]:
    """Outputs equal by the rule of tests/numerics.py; the relative RMS errors by name."""
    x = x if x is not None else _batch(family)
    with torch.no_grad(), RoundingChains() as chains:
        want = family.hf_call(hf, x)
        got = outputs(ours, x)
    assert set(got) == set(want)
    return {
        name: numerics.assert_close(
            got[name], want[name], chains.tolerance(torch.float32, got[name], want[name]), msg=name
        )
        for name in want
    }


@pytest.mark.parametrize("name", shipped())
def test_convert_gives_transformers_outputs(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    family = FAMILIES[name]
    hf = save(family, tmp_path / "hf")
    out = tmp_path / f"{name}.safetensors"
    assert main(["convert", str(tmp_path / "hf"), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model = archcomp.load(out).eval()  # an ordinary artifact: spec embedded, hashes verified
    assert model.spec["params"] == {**model.spec["params"], **family.params}
    _compare(family, hf, model)


@pytest.mark.parametrize("name", shipped())
def test_from_pretrained_outputs_and_gradients(name: str, tmp_path: Path) -> None:
    family = FAMILIES[name]
    hf = save(family, tmp_path)
    model = archcomp.from_pretrained(tmp_path)
    assert not model.training  # eval mode, as transformers' from_pretrained
    _compare(family, hf, model)
    x = _batch(family)
    with RoundingChains() as chains:
        want = family.hf_call(hf, x)
        got = outputs(model, x)
        g = torch.Generator().manual_seed(2)
        weights = {k: torch.randn(v.shape, generator=g) for k, v in want.items()}
        sum((want[k] * weights[k]).sum() for k in want).backward()  # type: ignore[union-attr]
        sum((got[k] * weights[k]).sum() for k in got).backward()  # type: ignore[union-attr]
    hf_name, our_name = family.embedding
    hf_grad = dict(hf.named_parameters())[hf_name].grad  # type: ignore[attr-defined]
    our_grad = model.get_parameter(our_name).grad
    assert hf_grad is not None and our_grad is not None
    numerics.assert_close(our_grad, hf_grad, chains.tolerance(torch.float32), msg=our_name)


@pytest.mark.parametrize("name", shipped())
def test_export_round_trips_through_transformers(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    family = FAMILIES[name]
    quiet()
    model = archcomp.build(ROOT / "specs" / f"{name}.yaml", params=family.params, seed=3).eval()
    artifact = tmp_path / "model.safetensors"
    archcomp.save(model, artifact)
    folder = tmp_path / "hf"
    assert main(["export", str(artifact), "--to", "hf", "-o", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    hf, info = family.cls().from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set(), info
    assert info["mismatched_keys"] == set(), info
    _compare(family, hf.eval(), model)
    again = archcomp.from_pretrained(folder)  # and back: the same weights, bit for bit
    for key, t in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], t), key


def test_export_of_a_spec_builds_it_and_refuses_to_overwrite(tmp_path: Path) -> None:
    args = ["export", str(ROOT / "specs" / "gpt2.yaml"), "--to", "hf", "-o", str(tmp_path)]
    small = ["-p", "N=1", "-p", "d_model=16", "-p", "h=2", "-p", "vocab=20", "-p", "context=8"]
    assert main(args + small) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["n_layer"], config["n_embd"], config["vocab_size"]) == (1, 16, 20)
    before = (tmp_path / "model.safetensors").read_bytes()
    assert main(args + small + ["--seed", "5"]) == 2  # no --force: both files unchanged
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert main(args + small + ["--seed", "5", "--force"]) == 0
    assert (tmp_path / "model.safetensors").read_bytes() != before


def _mapping_copy(tmp_path: Path, text: str) -> Path:
    """A mapping beside a copy of specs/gpt2.yaml (and its blocks), reading that copy."""
    shutil.copy(ROOT / "specs" / "gpt2.yaml", tmp_path / "gpt2.yaml")
    if not (tmp_path / "blocks").exists():
        shutil.copytree(ROOT / "specs" / "blocks", tmp_path / "blocks")
    path = tmp_path / "mapping.yaml"
    path.write_text(text.replace("spec: gpt2\n", "spec: gpt2.yaml\n"))
    return path


def test_square_transpose_trap(tmp_path: Path) -> None:
    """GPT-2's attn.c_proj is square: without its transpose every shape still matches and the
    weights load, with wrong outputs. The shipped mapping transposes it (its outputs equal
    transformers'); a mapping that forgets converts without complaint and only the outputs
    show it, while forgetting a non-square one (c_fc) is refused with a hint."""
    family = FAMILIES["gpt2"]
    hf = save(family, tmp_path / "hf")
    x = _batch(family)
    with torch.no_grad():
        want = family.hf_call(hf, x)["logits"]
    shipped = (ROOT / "specs" / "hf" / "gpt2.yaml").read_text()
    proj = 'transformer.h.{i}.attn.c_proj.weight: {to: "h_.{i}.attn.out_proj.weight", '
    assert proj + "transforms: [transpose]}" in shipped
    forgot = _mapping_copy(
        tmp_path, shipped.replace(proj + "transforms: [transpose]}", proj + "transforms: []}")
    )
    right = _compare(family, hf, archcomp.from_pretrained(tmp_path / "hf"), x)["logits"]
    with torch.no_grad():
        wrong = outputs(archcomp.from_pretrained(tmp_path / "hf", mapping=forgot), x)["logits"]
    # it loads, and computes something else: a relative error over a thousand times the right
    assert numerics.relative_error(wrong, want) > 0.05 > 1000 * right
    fc = 'transformer.h.{i}.mlp.c_fc.weight: {to: "h_.{i}.mlp.fc.weight", transforms: [transpose]}'
    assert fc in shipped
    no_fc = _mapping_copy(
        tmp_path, shipped.replace(fc, "transformer.h.{i}.mlp.c_fc.weight: h_.{i}.mlp.fc.weight")
    )
    with pytest.raises(archcomp.SpecError) as err:
        archcomp.from_pretrained(tmp_path / "hf", mapping=no_fc)
    text = err.value.format()
    assert (
        "mapping.yaml:51:3: error: checkpoint tensor 'transformer.h.0.mlp.c_fc.weight' is "
        "[32, 128], but model tensor 'h_.0.mlp.fc.weight' is [128, 32] (and 1 more like it)\n"
    ) in text
    assert "hint: the checkpoint stores it transposed: add the transpose transform" in text


def test_base_model_checkpoint_without_prefix(tmp_path: Path) -> None:
    """The hub's gpt2 stores GPT2Model's keys (h.0..., no 'transformer.'): the mapping's prefix."""
    from safetensors.torch import load_file, save_file

    family = FAMILIES["gpt2"]
    hf = save(family, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    save_file(
        {k.removeprefix("transformer."): v for k, v in tensors.items()},
        tmp_path / "model.safetensors",
        metadata={"format": "pt"},
    )
    _compare(family, hf, archcomp.from_pretrained(tmp_path))


def test_sharded_checkpoint(tmp_path: Path) -> None:
    family = FAMILIES["gpt2"]
    hf = save(family, tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    _compare(family, hf, archcomp.from_pretrained(tmp_path))


def test_dtype_as_stored_or_cast(tmp_path: Path) -> None:
    family = FAMILIES["gpt2"]
    quiet()
    torch.manual_seed(0)
    hf = family.make().to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    model = archcomp.from_pretrained(tmp_path)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    c_attn = hf.transformer.h[1].attn.c_attn.weight  # (d, 3d), Conv1D: in x out
    d = c_attn.shape[0]
    for i, part in enumerate(("q", "k", "v")):  # bit for bit: no rounding on the way
        got = model.get_parameter(f"h_.1.attn.{part}_proj.weight")
        assert torch.equal(got, c_attn[:, i * d : (i + 1) * d].T), part
    cast = archcomp.from_pretrained(tmp_path, dtype="float32")
    assert {p.dtype for p in cast.parameters()} == {torch.float32}
    numerics.assert_same(
        cast.get_parameter("wte.weight"), model.get_parameter("wte.weight").float()
    )


def test_weights_are_views_of_the_mapped_file_and_writable(tmp_path: Path) -> None:
    """CPU loads copy nothing a view can serve (a transposed Conv1D weight is a view); the
    file is mapped copy-on-write, so training the model never writes to the checkpoint."""
    family = FAMILIES["gpt2"]
    save(family, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    model = archcomp.from_pretrained(tmp_path)
    q = model.get_parameter("h_.0.attn.q_proj.weight")
    assert not q.is_contiguous()  # the transposed third of c_attn, not a copy
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert model.lm_head.weight is model.wte.weight  # the spec's tie holds in the module


def test_params_on_meta_build_allocates_only_buffers() -> None:
    from archcomp.backends.torch.build import build_graph

    g = archcomp.load_graph(
        ROOT / "specs" / "transformer.yaml",
        {"N": 1, "d_model": 16, "d_ff": 32, "h": 2, "vocab": 20},
    )
    model = build_graph(g, params_on_meta=True)
    assert all(p.is_meta for p in model.parameters())
    buffers = dict(model.named_buffers())
    assert buffers and not any(b.is_meta for b in buffers.values())
    full = archcomp.build(g.spec)
    for name, b in buffers.items():  # the sinusoid tables are the real ones
        assert torch.equal(b, full.get_buffer(name)), name


def _doc_block(first_line: str, lang: str = "yaml") -> str:
    doc = (ROOT / "docs" / "checkpoints.md").read_text()
    for block in re.findall(rf"```{lang}\n(.*?)```", doc, re.S):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"docs/checkpoints.md has no {lang} block starting {first_line!r}")


def test_the_worked_example_of_the_docs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/checkpoints.md's DistilBERT spec and mapping, as written, against transformers."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    quiet()
    (tmp_path / "distilbert.yaml").write_text(_doc_block("# distilbert.yaml"))
    mapping = _doc_block("# distilbert.hf.yaml")
    (tmp_path / "distilbert.hf.yaml").write_text(mapping)
    torch.manual_seed(0)
    cfg = DistilBertConfig(
        n_layers=2, dim=32, n_heads=4, hidden_dim=48, vocab_size=61, max_position_embeddings=16
    )
    hf = DistilBertForMaskedLM(cfg).eval()
    hf.save_pretrained(tmp_path / "distilbert")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        argv = ["convert", "distilbert", "--spec", "distilbert.yaml", "--mapping"]
        argv += ["distilbert.hf.yaml", "-o", "distilbert.safetensors"]
        assert main(argv) == 0
        model = archcomp.load("distilbert.safetensors").eval()
        ids = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(1))
        pad = torch.zeros(2, 9, dtype=torch.bool)
        pad[0, 7:] = True
        with torch.no_grad(), RoundingChains() as chains:
            want = hf(input_ids=ids, attention_mask=(~pad).long()).logits
            got = model(ids, pad)
        numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want))
        assert (
            main(
                [
                    "export",
                    "distilbert.safetensors",
                    "--to",
                    "hf",
                    "-o",
                    "back",
                    "--mapping",
                    "distilbert.hf.yaml",
                ]
            )
            == 0
        )
        back, info = DistilBertForMaskedLM.from_pretrained("back", output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        with torch.no_grad():  # the same weights in the same transformers model: bitwise
            numerics.assert_same(
                back.eval()(input_ids=ids, attention_mask=(~pad).long()).logits, want
            )
        # step 4 of the page: the errors of the mapping without its vocab_projector.bias rule
        capsys.readouterr()
        rule = "  vocab_projector.bias: vocab_projector.bias\n"
        assert rule in mapping
        (tmp_path / "distilbert.hf.yaml").write_text(mapping.replace(rule, ""))
        (tmp_path / "distilbert.safetensors").unlink()
        assert main(argv) == 1
        assert not (tmp_path / "distilbert.safetensors").exists()
        shown = _doc_block("$ archcomp convert distilbert", "text")
        assert shown.partition("\n")[0] == "$ archcomp " + " ".join(argv)
        assert capsys.readouterr().err == shown.partition("\n")[2]
    finally:
        os.chdir(cwd)


@pytest.mark.skipif(
    "llama" not in shipped(), reason="the llama spec and mapping are not shipped yet"
)
def test_permute_qk_loads_rotate_half_weights_into_an_interleaved_spec(tmp_path: Path) -> None:
    """A spec whose RoPE pairs adjacent dims (interleaved, as Meta's Llama code) loads
    transformers' rotate-half Llama through permute_qk on q_proj and k_proj (GQA: k over the
    key/value heads), computes transformers' outputs, and exports back to them exactly."""
    family = FAMILIES["llama"]
    hf = save(family, tmp_path / "hf")
    rope = 'rope: {theta: "${rope_theta}", max_len: "${context}",'
    block = (ROOT / "specs" / "blocks" / "llama.yaml").read_text()
    assert rope in block
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "llama.yaml").write_text(
        block.replace(rope, rope + " interleaved: true,")
    )
    shutil.copy(ROOT / "specs" / "llama.yaml", tmp_path / "llama.yaml")
    plain = (
        "  model.layers.{i}.self_attn.{q,k,v,o}_proj.weight: "
        "layers.{i}.self_attn.{q,k,v,out}_proj.weight\n"
    )
    mapping = (ROOT / "specs" / "hf" / "llama.yaml").read_text()
    assert plain in mapping
    permuted = (
        "  model.layers.{i}.self_attn.{v,o}_proj.weight: layers.{i}.self_attn.{v,out}_proj.weight\n"
        "  model.layers.{i}.self_attn.q_proj.weight: {to: 'layers.{i}.self_attn.q_proj.weight',"
        " transforms: [{permute_qk: {heads: '${h}', from: half, to: interleaved}}]}\n"
        "  model.layers.{i}.self_attn.k_proj.weight: {to: 'layers.{i}.self_attn.k_proj.weight',"
        " transforms: [{permute_qk: {heads: '${n_kv_heads}', from: half, to: interleaved}}]}\n"
    )
    path = tmp_path / "llama.hf.yaml"
    path.write_text(mapping.replace(plain, permuted).replace("spec: llama\n", "spec: llama.yaml\n"))
    model = archcomp.from_pretrained(tmp_path / "hf", mapping=path)
    _compare(family, hf, model)
    unpermuted = archcomp.from_pretrained(tmp_path / "hf", spec=tmp_path / "llama.yaml")
    x = _batch(family)
    with torch.no_grad():
        wrong = outputs(unpermuted, x)["logits"] - family.hf_call(hf, x)["logits"]
    assert numerics.relative_error(wrong, family.hf_call(hf, x)["logits"]) > 1e-3  # needed
    archcomp.save_pretrained(model, tmp_path / "back", mapping=path)
    back = family.cls().from_pretrained(tmp_path / "back")
    for key, t in hf.state_dict().items():
        assert torch.equal(back.state_dict()[key], t), key


def test_resnet_mappings_are_chosen_by_the_config_and_free_params_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both ResNet mappings read model_type resnet: the config's layer_type picks one, and a
    layer type neither computes is refused, naming why each does not fit. The input size is
    free: a ResNet built for 32x32 images exports (no weight depends on it)."""
    family = FAMILIES["resnet18"]
    save(family, tmp_path / "hf")
    assert archcomp.from_pretrained(tmp_path / "hf").name == "resnet18"
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["layer_type"] = "preactivation"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    assert main(["convert", str(tmp_path / "hf"), "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "no shipped mapping for model_type 'resnet' fits this config.json" in err
    assert 'layer_type is "preactivation"; the spec fixes it to "basic"' in err
    assert 'layer_type is "preactivation"; the spec fixes it to "bottleneck"' in err
    small = archcomp.build("resnet18", {**family.params, "image": 32}, seed=0)
    archcomp.save_pretrained(small, tmp_path / "out")
    back = archcomp.from_pretrained(tmp_path / "out")  # the spec's own input size again
    assert back.spec["params"]["image"] == 224
    for key, t in small.state_dict().items():
        assert torch.equal(back.state_dict()[key], t), key


def test_a_llama_with_a_rope_scaling_the_spec_lacks_is_refused(tmp_path: Path, capsys) -> None:
    """The llama spec scales RoPE as Llama 3.1 and 3.2 (llama3) and by linear interpolation;
    dynamic (which changes the frequencies only past max_position_embeddings, where the spec's
    tables end), yarn and longrope are refused at the config line, as docs/checkpoints.md
    says."""
    pytest.importorskip("transformers")
    save(FAMILIES["llama"], tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "rope_theta": 5e5, "factor": 2.0}
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config, indent=2))
    assert main(["convert", str(tmp_path / "ckpt"), "-o", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "rope_parameters.rope_type = 'dynamic' (the spec's param 'rope_type')" in err, err
    assert "choose one of 'default', 'llama3', 'linear'" in err, err
    assert not (tmp_path / "x.safetensors").exists()
    doc = (Path(__file__).resolve().parent.parent / "docs" / "checkpoints.md").read_text()
    assert "`dynamic`, `yarn` and `longrope` refused" in doc
