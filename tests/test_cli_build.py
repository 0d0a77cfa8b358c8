"""``archcomp build`` and ``archcomp summary`` end to end (in-process, through cli.main)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from numerics import assert_same

import archcomp
from archcomp.cli import main

ROOT = Path(__file__).resolve().parent.parent
MLP = str(ROOT / "specs" / "mlp.yaml")
TRANSFORMER = str(ROOT / "specs" / "transformer.yaml")
SMALL = ["-p", "N=1", "-p", "d_model=16", "-p", "d_ff=32", "-p", "h=2", "-p", "vocab=20"]


def test_build_writes_artifact_and_prints_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mlp.safetensors"
    assert main(["build", MLP, "-o", str(out), "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^fc1 +linear +\(B, 5\) +55 +220 B", text, re.M)
    assert re.search(r"^parameters +67$", text, re.M)
    assert f"wrote {out}" in text
    model = archcomp.load(out)
    assert torch.equal(model.fc1.weight, archcomp.build(MLP, seed=3).fc1.weight)


def test_default_output_and_force(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["build", MLP]) == 0
    out = tmp_path / "build" / "mlp.safetensors"
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["build", MLP, "--seed", "9"]) == 2
    err = capsys.readouterr().err
    assert "build/mlp.safetensors exists; pass --force to overwrite it" in err
    assert out.read_bytes() == before
    assert main(["build", MLP, "--seed", "9", "--force"]) == 0
    assert out.read_bytes() != before


def test_meta_build_prints_summary_only_and_emits_python(tmp_path: Path, capsys) -> None:
    emitted = tmp_path / "model.py"
    code = main(["build", TRANSFORMER, *SMALL, "--device", "meta", "--emit-python", str(emitted)])
    assert code == 0
    text = capsys.readouterr().out
    assert "no artifact written" in text and "encoder.layers   1x encoder_layer" in text
    assert not (tmp_path / "build").exists()
    source = emitted.read_text()
    imports = [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))]
    assert all("archcomp" not in ln for ln in imports)
    spec = importlib.util.spec_from_file_location("emitted_transformer", emitted)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    small = {k: int(v) for k, v in (p.split("=") for p in SMALL[1::2])}
    model = archcomp.build(TRANSFORMER, small, seed=0).eval()
    ejected = mod.Transformer().eval()
    ejected.load_state_dict(model.state_dict())
    src, tgt = torch.randint(0, 20, (2, 5)), torch.randint(0, 20, (2, 4))
    with torch.no_grad():
        assert_same(ejected(src, tgt), model(src, tgt))


def test_summary_depth_default_and_all(capsys) -> None:
    assert main(["summary", TRANSFORMER, *SMALL]) == 0
    collapsed = capsys.readouterr().out
    assert "encoder.layers   1x encoder_layer" in collapsed and "self_attn" not in collapsed
    assert main(["summary", TRANSFORMER, *SMALL, "--depth", "all"]) == 0
    assert "encoder.layers.0.self_attn" in capsys.readouterr().out
    assert main(["summary", TRANSFORMER, "--depth", "-1"]) == 2


def test_summary_json(capsys) -> None:
    assert main(["summary", MLP, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format_version"] == 1 and data["name"] == "mlp"
    assert data["parameters"] == 67 and data["trainable_parameters"] == 67
    assert data["trainable_params"] == 67  # deprecated name, kept until 0.3
    assert data["params"] == {}  # the spec's params (mlp has none)
    assert data["macs"] == 60 and data["macs_symbolic"] == "60*B" and data["dims"] == {"B": 1}
    assert data["outputs"] == {"y": ["B", 2]}
    assert [n["name"] for n in data["nodes"]] == ["fc1", "act", "fc2"]
    assert data["nodes"][0] == {
        "name": "fc1",
        "kind": "node",
        "op": "linear",
        "depth": 0,
        "shape": ["B", 5],
        "parameters": 55,
        "params": 55,
        "param_bytes": 220,
        "buffer_bytes": 0,
        "activation_bytes": 40,  # fc1 keeps its input x: (B=1, 10) float32
        "macs": 50,
        "macs_symbolic": "50*B",
    }


def test_summary_counts_tied_weights_once_and_collapses_blocks(capsys) -> None:
    assert main(["summary", TRANSFORMER, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] == 63_082_496  # one 37000 x 512 embedding, used three times
    assert data["tied_parameters"] == 2 * 37000 * 512
    assert data["ties"] == {
        "tgt_embed.weight": "src_embed.weight",
        "generator.weight": "src_embed.weight",
    }
    assert data["outputs"] == {"logits": ["B", "T", 37000]}
    assert data["dims"] == {"B": 8, "S": 64, "T": 64}
    assert main(["summary", TRANSFORMER, "--depth", "0"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"^encoder +encoder \(block\)", table, re.M)
    assert "encoder.layers" not in table


def test_usage_errors_exit_2_without_traceback(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "x.safetensors")
    if not torch.cuda.is_available():
        assert main(["build", MLP, "-o", out, "--device", "cuda"]) == 2
        assert "is not available" in capsys.readouterr().err
    assert main(["build", TRANSFORMER, "-o", out, "--max-memory", "1MB"]) == 2
    err = capsys.readouterr().err
    assert "over the --max-memory budget" in err and "--device meta" in err
    assert "Traceback" not in err
    assert main(["build", MLP, "-o", out, "--dtype", "int3"]) == 2
    assert not Path(out).exists()


def test_spec_errors_exit_1(spec_file, capsys) -> None:
    path = spec_file(
        "archcomp: 1\nname: m\ninputs: {x: [B, 4]}\nnodes:\n"
        "  - {id: fc, op: linear, out_features: 2, init: {weight: glorot}}\noutputs: fc\n"
    )
    assert main(["build", str(path), "--device", "meta"]) == 1
    assert "unknown initializer 'glorot'" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["mlp", "lenet5", "lstm_classifier", "rnn", "cnn"])
def test_shipped_specs_summarize(spec: str, capsys) -> None:
    assert main(["summary", str(ROOT / "specs" / f"{spec}.yaml"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] > 0 and data["macs"] > 0 and data["memory"]["activation_bytes"] > 0


def test_a_failing_output_leaves_every_other_output_untouched(tmp_path: Path, capsys) -> None:
    """All outputs or none: the artifact cannot be written, so --emit-python's file keeps its
    old content even with --force."""
    (tmp_path / "blocked").write_text("a file where a folder is needed")
    emit = tmp_path / "e.py"
    emit.write_text("old")
    argv = ["build", MLP, "-o", str(tmp_path / "blocked" / "x.safetensors")]
    assert main([*argv, "--emit-python", str(emit), "--force"]) == 2
    assert "existing output files are unchanged" in capsys.readouterr().err
    assert emit.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "e.py"]


def test_the_same_file_for_both_outputs_is_a_usage_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "x"
    assert main(["build", MLP, "-o", str(out), "--emit-python", str(out)]) == 2
    assert "name the same file" in capsys.readouterr().err
