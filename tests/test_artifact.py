"""Artifacts: safetensors + embedded spec; round trips, tampering, foreign files, atomic writes."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from numerics import assert_same
from safetensors.torch import save_file

import archcomp
from archcomp.backends.torch import artifact
from archcomp.backends.torch.artifact import ArtifactError, read_header, spec_hash, spec_json

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"N": 1, "d_model": 16, "d_ff": 32, "h": 2, "vocab": 20}


@pytest.fixture(scope="module")
def transformer() -> torch.nn.Module:
    return archcomp.build(ROOT / "specs" / "transformer.yaml", SMALL, seed=5).eval()


def _rewrite_header(path: Path, edit: object) -> None:
    """Rewrite a safetensors header in place with ``edit(header)`` (keeps the data bytes)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)  # type: ignore[operator]
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def test_round_trip_identical_outputs_ties_and_metadata(transformer, tmp_path: Path) -> None:
    path = archcomp.save(transformer, tmp_path / "t.safetensors")
    _, meta = read_header(path)
    assert json.loads(meta["archcomp.spec"]) == transformer.source
    assert meta["archcomp.spec_sha256"] == spec_hash(spec_json(transformer.source))
    assert json.loads(meta["archcomp.ties"]) == {
        "tgt_embed.weight": "src_embed.weight",
        "generator.weight": "src_embed.weight",
    }
    loaded = archcomp.load(path).eval()
    assert loaded.tgt_embed.weight is loaded.src_embed.weight
    src, tgt = torch.randint(0, 20, (2, 5)), torch.randint(0, 20, (2, 3))
    assert torch.equal(loaded(src, tgt), transformer(src, tgt))
    sd_a, sd_b = transformer.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_dtype_is_kept_and_can_be_changed_on_load(tmp_path: Path) -> None:
    model = archcomp.build(ROOT / "specs" / "mlp.yaml", dtype="bfloat16", seed=0)
    path = archcomp.save(model, tmp_path / "m.safetensors")
    assert archcomp.load(path).fc1.weight.dtype == torch.bfloat16
    wide = archcomp.load(path, dtype="float32")
    assert wide.fc1.weight.dtype == torch.float32
    assert torch.equal(wide.fc1.weight, model.fc1.weight.float())


def test_tampered_spec_is_refused(transformer, tmp_path: Path) -> None:
    path = archcomp.save(transformer, tmp_path / "t.safetensors")

    def edit(h: dict) -> None:
        spec = json.loads(h["__metadata__"]["archcomp.spec"])
        spec["params"]["d_ff"] = 33  # an override
        h["__metadata__"]["archcomp.spec"] = spec_json(spec)

    _rewrite_header(path, edit)
    with pytest.raises(ArtifactError, match="embedded spec does not match its SHA-256"):
        archcomp.load(path)


def test_tampered_weights_are_refused(transformer, tmp_path: Path) -> None:
    path = archcomp.save(transformer, tmp_path / "t.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # flip bits of the last weight
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="weights do not match their SHA-256"):
        archcomp.load(path)


def test_consistent_but_wrong_file_is_refused_by_names_and_shapes(tmp_path: Path) -> None:
    model = archcomp.build(ROOT / "specs" / "mlp.yaml", seed=0)
    text = spec_json(model.spec)
    tensors = {"fc1.weight": torch.zeros(5, 11), "fc2.weight": torch.zeros(2, 5)}
    path = tmp_path / "wrong.safetensors"
    meta = {"archcomp.spec": text, "archcomp.spec_sha256": spec_hash(text)}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ArtifactError) as err:
        archcomp.load(path)
    msg = str(err.value)
    assert "missing tensors: fc1.bias, fc2.bias" in msg
    assert "fc1.weight: shape [5, 11] in the file, [5, 10] in the spec" in msg


def test_foreign_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    pkl = tmp_path / "model.pt"
    pkl.write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    with pytest.raises(
        ArtifactError, match=r"torch.save \(pickle\) file; archcomp never unpickles"
    ):
        archcomp.load(pkl)
    torch_file = tmp_path / "torch.pt"
    torch.save({"w": torch.zeros(2)}, torch_file)
    with pytest.raises(ArtifactError, match="never unpickles"):
        archcomp.load(torch_file)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ArtifactError, match="its header is not JSON"):
        archcomp.load(junk)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(ArtifactError, match="only 3 bytes"):
        archcomp.load(tiny)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ArtifactError, match="not an archcomp artifact"):
        archcomp.load(plain)
    with pytest.raises(ArtifactError, match="no such file"):
        archcomp.load(tmp_path / "missing.safetensors")


def test_failed_write_leaves_previous_file_and_no_partial(monkeypatch, tmp_path: Path) -> None:
    model = archcomp.build(ROOT / "specs" / "mlp.yaml", seed=0)
    path = archcomp.save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def broken(filename: Path, tensors: object, metadata: object = None, *_: object) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    import archcomp.backends.torch.artifact as artifact

    monkeypatch.setattr(artifact, "_write_safetensors", broken)
    with pytest.raises(OSError, match="disk full"):
        archcomp.save(model, path, force=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_meta_model_cannot_be_saved(tmp_path: Path) -> None:
    model = archcomp.build(ROOT / "specs" / "mlp.yaml", device="meta")
    with pytest.raises(archcomp.UsageError, match="meta device"):
        archcomp.save(model, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_loader_never_unpickles(monkeypatch, transformer, tmp_path: Path) -> None:
    path = archcomp.save(transformer, tmp_path / "t.safetensors")

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    archcomp.load(path)
    assert artifact.MAX_HEADER > 0


def test_round_trip_keeps_input_output_and_port_order(tmp_path: Path) -> None:
    """Mapping order is meaning: forward's argument order, the output dict, ports by name."""
    spec = """
archcomp: 1
name: order
inputs: {x: [B, S, 4], h: [1, B, 6]}
nodes:
  - {id: g, op: gru, in: {h0: h, x: x}, hidden_size: 6}
  - {id: z, op: linear, in: g.output, out_features: 3}
outputs: {z: z, a: g.h_n}
"""
    model = archcomp.build(spec, seed=0).eval()
    path = tmp_path / "order.safetensors"
    archcomp.save(model, path)
    again = archcomp.load(path).eval()
    assert again.input_names == ("x", "h") and again.output_names == ("z", "a")
    x, h = torch.randn(2, 5, 4), torch.randn(1, 2, 6)
    with torch.no_grad():
        first, second = model(x, h), again(x, h)
    assert list(second) == ["z", "a"]
    for name in first:
        assert_same(second[name], first[name])


def test_header_length_with_low_byte_0x80_is_safetensors_not_pickle(tmp_path: Path) -> None:
    """The first byte of a safetensors file is its header length's low byte: 0x80 is valid."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    header += " " * (0x180 - len(header))  # safetensors pads headers with spaces
    path = tmp_path / "p80.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + struct.pack("<f", 1.5))
    assert path.read_bytes()[0] == 0x80
    with pytest.raises(ArtifactError) as info:
        read_header(path)  # read as safetensors: refused only for lacking archcomp's metadata
    assert "no embedded spec" in str(info.value) and "pickle" not in str(info.value)
    pickled = tmp_path / "model.safetensors"
    pickled.write_bytes(pickle.dumps({"w": [1.5]}, protocol=2))
    with pytest.raises(ArtifactError, match="pickle"):
        read_header(pickled)


def test_shipped_spec_with_imports_round_trips(tmp_path) -> None:
    # gpt2 imports blocks/gpt.yaml from the shipped folder: the artifact names it as any
    # spec's import (it was once keyed as a library file, and the artifact did not load).
    import archcomp as ac

    params = {"vocab": 32, "context": 8, "d_model": 16, "h": 2, "N": 1}
    model = ac.build("gpt2", params, seed=0)
    assert sorted(model.source["files"]) == ["blocks/gpt.yaml", "gpt2.yaml"]
    ac.save(model, tmp_path / "g.safetensors")
    back = ac.load(tmp_path / "g.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
