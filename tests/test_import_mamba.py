"""`archcomp import --hf` of transformers' MambaForCausalLM: its MambaMixer (the torch path, no
CUDA kernels) recognised as a whole into the shipped spec's ``mamba_mixer`` nodes, A_log and D
as ``parameter`` nodes fed to ``selective_scan``, the LM head tied to the embedding; a small
random config with every weight re-drawn (A_log, D and dt_proj's bias too), saved with
save_pretrained, round-trips from the command line: logits and every gradient equal to
transformers' (tests/NUMERICS.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import Case, check_case, check_compile_export_emit
from hf_models import quiet
from lowering import redraw
from numerics import RoundingChains, assert_close

import archcomp
from archcomp.cli.main import main

transformers = pytest.importorskip("transformers")
VOCAB = 50


def _mamba(tmp_path: Path, seed: int = 7, **extra: Any) -> tuple[Any, Path]:
    """A tiny re-drawn MambaForCausalLM (2 layers, 16 wide, 4 states) and its saved folder."""
    quiet()
    sizes = dict(vocab_size=VOCAB, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2)
    config = transformers.MambaConfig(**sizes | {"conv_kernel": 3, "time_step_rank": 3} | extra)
    model = transformers.MambaForCausalLM(config)
    redraw(model, seed)
    folder = tmp_path / "mamba"
    model.save_pretrained(folder)
    return model.eval(), folder


def test_mamba_round_trip_from_the_cli(tmp_path: Path) -> None:
    ref, folder = _mamba(tmp_path)
    spec, art = tmp_path / "mamba.yaml", tmp_path / "mamba.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    a_log = '- {id: A_log, op: parameter, shape: ["${intermediate_size}", "${state_size}"]'
    assert a_log + ", key: self}" in text
    assert "in: {x: act, delta: delta, B: B, C: C, z: xz.out1, A_log: A_log, D: D}" in text
    assert "tie: {weight: backbone.embeddings.weight}" in text
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, VOCAB, (2, 11), generator=gen)
    with torch.no_grad(), RoundingChains() as chains:
        got, want = archcomp.load(art).eval()(input_ids=ids), ref(input_ids=ids).logits
    got = got["logits"] if isinstance(got, dict) else got
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
    # gradients, on the built spec with transformers' own state_dict (no mapping), over 37
    # positions: past 32, where archcomp's scan takes its chunked algorithm under autograd
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    long = torch.randint(0, VOCAB, (2, 37), generator=gen)
    case = Case(
        model,
        ref,
        (long,),
        lambda x: [ref(input_ids=x, use_cache=False).logits],
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)


def test_the_imported_mamba_emits_standalone_python(tmp_path: Path) -> None:
    """Its scans take A_log and D as inputs and hold none: ``--emit-python`` rebuilds them so
    (SelectiveScan keeps ``holds_params`` to be read back), and the emitted module, loaded
    with the built one's state_dict, gives its outputs; torch.compile and export too."""
    _, folder = _mamba(tmp_path)
    spec = tmp_path / "mamba.yaml"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    model = archcomp.build(spec.read_text(), seed=0)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(4))
    check_compile_export_emit(model, (ids,), tmp_path)
    art = tmp_path / "m.safetensors"
    assert main(["build", str(spec), "-o", str(art), "--emit-python", str(tmp_path / "e.py")]) == 0


def test_mamba_params_are_the_configs(tmp_path: Path) -> None:
    """The mixer is written in its config's names: -p state_size, -p conv_kernel resize it."""
    from archcomp.importer.hf import import_hf

    _, folder = _mamba(tmp_path)
    text = import_hf(folder)
    assert '- {id: x_proj, op: linear, out_features: "${time_step_rank + 2 * state_size}"' in text
    assert '- {id: norm_f, op: rms_norm, eps: "${layer_norm_epsilon}"}' in text
    params = {"num_hidden_layers": 1, "state_size": 8, "conv_kernel": 2}
    shapes = {
        k: tuple(v.shape)
        for k, v in archcomp.build(text, params, device="meta").state_dict().items()
    }
    assert "backbone.layers.1.mixer.A_log" not in shapes
    assert shapes["backbone.layers.0.mixer.A_log"] == (32, 8)
    assert shapes["backbone.layers.0.mixer.conv1d.weight"] == (32, 1, 2)
    assert shapes["backbone.layers.0.mixer.x_proj.weight"] == (3 + 16, 32)


@pytest.mark.parametrize(
    "extra",
    [
        {"use_conv_bias": False, "use_bias": True, "hidden_act": "gelu"},
        {"conv_kernel": 1},
    ],
)
def test_mamba_variants_round_trip(tmp_path: Path, extra: dict[str, Any]) -> None:
    """Biases on the projections, none on the conv, another activation; a kernel of one (no
    causal cut): the state_dict loads strictly, logits equal."""
    from archcomp.importer.hf import import_hf

    ref, folder = _mamba(tmp_path, **extra)
    text = import_hf(folder)
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    ids = torch.randint(0, VOCAB, (3, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(input_ids=ids), ref(input_ids=ids).logits
    assert_close(got, want, chains.tolerance(torch.float32, got, want))


def test_a_mixer_whose_calls_differ_is_refused_call_by_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A MambaMixer computing something else (here its conv without the activation) is not the
    mixer's pattern: each call no op expresses is listed with its line, never approximated."""
    from transformers.models.mamba import modeling_mamba

    def plain(x: torch.Tensor, weight: torch.Tensor, bias: Any = None, **kw: Any) -> Any:
        conv = torch.nn.functional.conv1d  # the activation left out
        out = conv(x, weight.unsqueeze(1), bias, padding=weight.shape[-1] - 1, groups=x.shape[1])
        return out[:, :, : x.shape[-1]]

    _, folder = _mamba(tmp_path)
    monkeypatch.setattr(modeling_mamba, "causal_conv1d_fn", plain)
    assert main(["import", "--hf", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot import" in err
    for line in (
        "(reads the tensor backbone.layers.0.mixer.conv1d.weight directly) at modeling_mamba.py",
        "aten.split_with_sizes.default (no archcomp op for it) at modeling_mamba.py:",
        "aten.softplus.default (no archcomp op for it) at modeling_mamba.py:",
    ):
        assert line in err


def test_the_imported_spec_is_a_fixed_point(tmp_path: Path) -> None:
    """import_module of the imported spec's built model gives a spec of the same weights, the
    scan's A_log and D still parameter nodes of the mixer, outputs equal."""
    from archcomp.importer.hf import import_hf

    _, folder = _mamba(tmp_path)
    built = archcomp.build(import_hf(folder), seed=0).eval()
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    again = archcomp.build(archcomp.import_module(built, {"input_ids": ids})).eval()
    again.load_state_dict(built.state_dict(), strict=True)
    assert list(again.state_dict()) == list(built.state_dict())
    with torch.no_grad(), RoundingChains() as chains:
        got, want = again(input_ids=ids), built(input_ids=ids)
    assert_close(got, want, chains.tolerance(torch.float32, got, want))


def test_the_imported_mamba_decodes_as_transformers(tmp_path: Path) -> None:
    """The imported mixer is the shipped one's shape (a causal conv1d then its cut, a
    selective_scan): generate carries each layer's conv window and scan state, token for token
    transformers' greedy generate (docs/generation.md)."""
    from archcomp.importer.hf import import_hf

    ref, folder = _mamba(tmp_path, 11, hidden_size=32, state_size=8)
    model = archcomp.build(import_hf(folder)).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    ids = torch.tensor([[1, 7, 9, 3, 22], [4, 40, 2, 2, 13]])
    got = model.generate(ids, max_new_tokens=12)
    want = ref.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert torch.equal(got, want)
    assert len(set(got[:, 5:].flatten().tolist())) >= 4  # not one token repeated


def test_docs_mamba_block_is_what_import_writes(tmp_path: Path) -> None:
    """docs/import.md's mamba_mixer block, from Mamba's defaults at 16 wide with 4 states."""
    from archcomp.importer.hf import import_hf

    doc = (Path(__file__).resolve().parent.parent / "docs" / "import.md").read_text()
    shown = doc.split("### Mamba\n", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = transformers.MambaConfig(vocab_size=VOCAB, hidden_size=16, state_size=4)
    config.architectures = ["MambaForCausalLM"]
    config.save_pretrained(tmp_path)  # config.json only: import --hf reads no weights
    assert shown in import_hf(tmp_path)


def test_mamba_model_without_its_head(tmp_path: Path) -> None:
    """MambaModel: its last_hidden_state, transformers' state_dict loaded strictly."""
    from archcomp.importer.hf import import_hf

    ref, folder = _mamba(tmp_path)
    base = folder.parent / "base"
    ref.backbone.save_pretrained(base)
    model = archcomp.build(import_hf(base)).eval()
    model.load_state_dict(ref.backbone.state_dict(), strict=True)
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(6))
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(input_ids=ids), ref.backbone(input_ids=ids).last_hidden_state
    got = got["last_hidden_state"] if isinstance(got, dict) else got
    assert_close(got, want, chains.tolerance(torch.float32, got, want))


def test_import_module_of_a_mamba_model(tmp_path: Path) -> None:
    """archcomp.import_module (torch.fx cannot trace it: torch.export's graph is read, as for
    --hf) gives the same mixer, its sizes the block's own params; logits equal."""
    ref, _ = _mamba(tmp_path, use_cache=False)  # a DynamicCache output does not export
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(8))
    text = archcomp.import_module(ref, {"input_ids": ids}, dims={"B": 0, "T": 1})
    assert "params: {hidden_size: 16, intermediate_size: 32, state_size: 4, conv_kernel: 3," in text
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    ids = torch.randint(0, VOCAB, (3, 10), generator=torch.Generator().manual_seed(9))
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(input_ids=ids), ref(input_ids=ids).logits
    got = got["logits"] if isinstance(got, dict) else got
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
