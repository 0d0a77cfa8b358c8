"""Resource estimates cover the peak and the initializers' work, and archcomp.load has a budget;
artifacts store the spec texts and typed overrides, so what was built is what reloads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import archcomp
from archcomp.backends.torch.artifact import read_header
from archcomp.backends.torch.devices import MAX_INIT_FLOPS, estimate
from archcomp.base.errors import UsageError
from archcomp.cli import main
from archcomp.passes.pipeline import load_graph

ROOT = Path(__file__).resolve().parent.parent


def _posenc(max_len: int, d: int) -> str:
    return (
        f"archcomp: 1\nname: pe\ninputs: {{x: [B, S, {d}]}}\n"
        f"nodes:\n  - {{id: pe, op: sinusoidal_positional_encoding, max_len: {max_len}}}\n"
        "outputs: pe\n"
    )


def _ortho(n: int) -> str:
    return (
        f"archcomp: 1\nname: o\ninputs: {{x: [B, {n}]}}\nnodes:\n"
        f"  - {{id: fc, op: linear, out_features: {n}, bias: false, "
        "init: {weight: orthogonal}}\noutputs: fc\n"
    )


def test_the_estimate_covers_the_peak_of_a_sinusoidal_table() -> None:
    est = estimate(load_graph(_posenc(600_000, 1024)), torch.float32)
    assert est.total_bytes == 600_000 * 1024 * 4
    assert 0 < est.scratch_bytes <= 32 << 20 and est.scratch_node == "pe"
    assert est.peak_bytes == est.total_bytes + est.scratch_bytes


def test_a_budget_between_the_final_and_the_peak_bytes_is_refused() -> None:
    est = estimate(load_graph(_posenc(4096, 512)), torch.float32)
    budget = est.total_bytes + est.scratch_bytes // 2  # holds the table, not its temporaries
    with pytest.raises(UsageError, match="at its peak, while building 'pe'"):
        archcomp.build(_posenc(4096, 512), max_memory=budget)
    model = archcomp.build(_posenc(4096, 512), max_memory=est.peak_bytes)
    pe = model.pe.pe
    i = torch.arange(0, 512, 2, dtype=torch.float32)
    pos = torch.arange(4096, dtype=torch.float32)[:, None]
    angle = pos * torch.exp(i * (-math.log(10000.0) / 512))  # the formula, in one piece
    torch.testing.assert_close(pe[:, 0::2], torch.sin(angle))  # float32 defaults
    torch.testing.assert_close(pe[:, 1::2], torch.cos(angle))


def test_chunked_table_matches_the_whole_table_in_every_dtype() -> None:
    from archcomp.nn.positional import CHUNK, sinusoid_table
    from archcomp.ops.positional import SINUSOID_CHUNK

    assert CHUNK == SINUSOID_CHUNK
    n, d = CHUNK // 7 + 5, 15  # several chunks, an odd width
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    angle = pos * torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    whole = torch.empty(n, d)
    whole[:, 0::2], whole[:, 1::2] = torch.sin(angle), torch.cos(angle[:, : d // 2])
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        assert torch.equal(sinusoid_table(n, d, dtype=dtype), whole.to(dtype))


def test_orthogonal_init_is_costed_and_refused_past_the_limit() -> None:
    est = estimate(load_graph(_ortho(16384)), torch.float32)
    assert est.init_flops == 2 * 16384**3 and est.init_what == "fc.weight (16384x16384)"
    assert est.scratch_bytes == 3 * 16384 * 16384 * 4  # the matrix, Q and R
    with pytest.raises(UsageError, match="QR decomposition, cubic in its size"):
        archcomp.build(_ortho(16384))
    small = estimate(load_graph(_ortho(64)), torch.float32)
    assert small.init_flops < MAX_INIT_FLOPS
    archcomp.build(_ortho(64))  # a small orthogonal init is fine
    with pytest.raises(UsageError, match="raise --max-init-flops"):
        archcomp.build(_ortho(64), max_init_flops=1000)
    assert archcomp.build(_ortho(16384), device="meta", seed=0).fc.weight.is_meta  # no work


def test_cli_max_init_flops(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "o.yaml"
    spec.write_text(_ortho(64))
    out = str(tmp_path / "o.safetensors")
    assert main(["build", str(spec), "-o", out, "--max-init-flops", "1000"]) == 2
    assert "over the limit of 1e+03" in capsys.readouterr().err
    assert main(["build", str(spec), "-o", out]) == 0


def test_load_refuses_past_its_budget_before_computing(tmp_path: Path) -> None:
    path = archcomp.save(archcomp.build(_posenc(16, 8)), tmp_path / "pe.safetensors")
    assert archcomp.load(path, max_memory="1MB").pe.pe.shape == (16, 8)
    big = archcomp.save(archcomp.build(_posenc(100_000, 64)), tmp_path / "big.safetensors")
    assert big.stat().st_size < 2000  # the table is not stored: it is recomputed on load
    with pytest.raises(UsageError, match="over the --max-memory budget"):
        archcomp.load(big, max_memory="10MB")


def test_load_does_not_run_the_initializers(tmp_path: Path, monkeypatch) -> None:
    model = archcomp.build(_ortho(32), seed=0)
    path = archcomp.save(model, tmp_path / "o.safetensors")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("load ran an initializer; the weights come from the file")

    monkeypatch.setattr(torch.nn.init, "orthogonal_", refuse)
    assert torch.equal(archcomp.load(path).fc.weight, model.fc.weight)


TYPED = """archcomp: 1
name: typed
params:
  S: {type: str, default: "abc", doc: "a label"}
  F: {type: float, default: 1.5}
  n: 2
inputs: {x: [B, 4]}
nodes:
  - {id: fc, op: linear, out_features: "${n}", label: "${S}"}
outputs: fc
"""


@pytest.mark.parametrize(
    ("overrides", "want"),
    [
        ({"S": "${1+1}"}, {"S": "${1+1}", "F": 1.5, "n": 2}),  # a string, not the int 2
        ({"F": 2}, {"S": "abc", "F": 2.0, "n": 2}),  # an int for a float stays a float
        ({"n": 3, "S": "x: y"}, {"S": "x: y", "F": 1.5, "n": 3}),
    ],
)
def test_overrides_reload_with_their_types(tmp_path: Path, overrides, want) -> None:
    model = archcomp.build(TYPED, overrides)
    path = archcomp.save(model, tmp_path / "t.safetensors")
    back = archcomp.load(path)
    assert back.source == model.source and back.source["params"] == overrides
    g = load_graph(TYPED, overrides)
    assert {k: g.params[k] for k in want} == want
    assert [type(g.params[k]) for k in want] == [type(v) for v in want.values()]
    assert back.fc.out_features == want["n"]


def test_a_large_spec_reloads_from_its_text_not_a_redump(tmp_path: Path) -> None:
    """Block-style YAML of the re-dumped mapping was 40 times the text and past the limit."""
    params = "".join(f"  p{i}: [{', '.join(['1'] * 40)}]\n" for i in range(2500))
    spec = TYPED.replace("params:\n", "params:\n" + params)
    assert len(spec) > 250_000
    path = archcomp.save(archcomp.build(spec), tmp_path / "big.safetensors")
    _, meta = read_header(path)
    assert len(meta["archcomp.spec"]) < 2 * len(spec)
    assert archcomp.load(path).source["files"]["<string>"] == spec


def test_an_artifact_with_imports_loads_without_the_imported_files(
    tmp_path: Path, monkeypatch
) -> None:
    small = {"N": 1, "d_model": 16, "d_ff": 32, "h": 2, "vocab": 20}
    model = archcomp.build(ROOT / "specs" / "transformer.yaml", small, seed=0)
    assert set(model.source["files"]) == {"transformer.yaml", "blocks/transformer.yaml"}
    path = archcomp.save(model, tmp_path / "t.safetensors")
    monkeypatch.chdir(tmp_path)  # nothing of specs/ is here
    back = archcomp.load(path)
    assert back.source == model.source
    sd_a, sd_b = model.state_dict(), back.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
