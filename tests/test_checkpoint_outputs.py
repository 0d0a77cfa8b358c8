"""Issue 21's cases that need a hook into a running command (a race, a failing mmap, a full
disk) or another entry point (the sharded loader, ``build -``, ``build`` of a huge table),
each through the real CLI or API: a clean error, nothing clobbered."""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hostile_support.checkpoint_attacks import read_weights
from hostile_support.checkpoint_corpus import good_checkpoint

from archcomp.base.paths import OutsideFolder, confined, is_inside
from archcomp.cli.main import main


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return good_checkpoint(tmp_path_factory.mktemp("outputs") / "good")


def test_a_convert_whose_output_appears_meanwhile_keeps_the_other(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two converts to one output without --force: the one that names its file second fails,
    atomically (no exists() check before a slow load decides it)."""
    import archcomp.checkpoints.load as load

    out = tmp_path / "model.safetensors"
    real = load.from_pretrained

    def racing(*args: Any, **kw: Any) -> Any:
        model = real(*args, **kw)
        out.write_bytes(b"the other convert's artifact")  # it finished first
        return model

    monkeypatch.setattr(load, "from_pretrained", racing)
    assert main(["convert", str(good), "-o", str(out)]) == 2
    assert f"{out} exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"the other convert's artifact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_a_failing_memory_map_is_a_usage_error(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import safetensors

    def no_memory(*args: Any, **kw: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(safetensors, "safe_open", no_memory)
    assert main(["convert", str(good), "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "cannot map the file into memory" in err and "internal error" not in err
    assert not list(tmp_path.iterdir())


def test_convert_checks_the_free_disk_before_writing(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import archcomp.cli.convert as convert

    monkeypatch.setattr(convert, "free_space", lambda target: 1000)
    assert main(["convert", str(good), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "but its disk has 1000 B free" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_sharded_loader_checks_ties_as_archcomp_load_does(tmp_path: Path) -> None:
    """archcomp.ties as a JSON list: one error from both loaders (was a TypeError)."""
    import archcomp
    from archcomp.backends.torch.artifact import ArtifactError
    from archcomp.distributed.checkpoint import load_artifact_sharded

    model = archcomp.build("mlp", seed=0)
    path = tmp_path / "mlp.safetensors"
    archcomp.save(model, path)
    header, data = read_weights(path)
    header["__metadata__"]["archcomp.ties"] = "[1, 2]"
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + data)
    with pytest.raises(ArtifactError) as loaded:
        archcomp.load(path)
    with pytest.raises(ArtifactError) as sharded:
        load_artifact_sharded(model, path)
    assert str(sharded.value) == str(loaded.value)
    assert "archcomp.ties is not a mapping of names" in str(loaded.value)


def test_build_reads_the_spec_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = Path(__file__).parents[1] / "specs" / "mlp.yaml"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(spec.read_bytes())))
    monkeypatch.chdir(spec.parent)
    out = tmp_path / "mlp.safetensors"
    assert main(["-q", "build", "-", "-o", str(out)]) == 0, capsys.readouterr().err
    assert out.stat().st_size > 0


def _limit_cpu() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))  # a hang is killed, never waited on


def test_a_table_past_the_init_budget_is_refused_before_it_is_computed(tmp_path: Path) -> None:
    """600,000 x 1,024 sinusoids fit --max-memory 3GB but take minutes to compute: refused
    under the default --max-init-flops, within a CPU bound of 60 s (a wide margin)."""
    spec = tmp_path / "table.yaml"
    spec.write_text(
        "archcomp: 1\nname: table\ninputs: {x: [B, T, 1024]}\n"
        "nodes:\n  - {id: pe, op: sinusoidal_positional_encoding, in: x, max_len: 600000}\n"
        "outputs: {y: pe}\n"
    )
    out = tmp_path / "o.safetensors"
    argv = ["build", str(spec), "--max-memory", "3GB", "-o", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "archcomp", *argv],
        capture_output=True,
        text=True,
        preexec_fn=_limit_cpu,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "the tables need about 3.1e+11 floating-point operations" in proc.stderr
    assert "pe.pe (600000x1024)" in proc.stderr and not out.exists()


def test_one_confinement_rule(tmp_path: Path) -> None:
    inside = tmp_path / "folder"
    (inside / "sub").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (inside / "out").symlink_to(tmp_path / "secret")
    (inside / "in").symlink_to(inside / "sub")
    assert confined(inside, "sub/../sub/a.yaml") == inside / "sub" / "a.yaml"
    assert confined(inside, "in") == inside / "in"
    for bad in ("out", "../secret", "/etc/passwd", "~/x", "file:///etc/passwd", "a\x00b"):
        with pytest.raises(OutsideFolder):
            confined(inside, bad)
    assert not is_inside(inside / "out", inside)
    assert is_inside(inside / "out", inside, follow=False)


def test_numbers_in_checkpoint_json_are_refused_at_their_place(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 5,000-digit size is refused before int() sees it, at its line and column."""
    import shutil

    folder = tmp_path / "ck"
    shutil.copytree(good, folder)
    config = json.loads((folder / "config.json").read_text())
    text = json.dumps(config, indent=2).replace('"n_layer": 2', '"n_layer": ' + "7" * 5000)
    (folder / "config.json").write_text(text)
    line = text[: text.index("7" * 5000)].count("\n") + 1
    assert main(["convert", str(folder), "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert f"config.json:{line}:14: a number of 5,000 characters" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_convert_over_its_memory_budget_names_its_own_remedies(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """convert has no --device: its refusal suggests --dtype and --max-memory, not meta."""
    out = tmp_path / "x.safetensors"
    assert main(["convert", str(good), "-o", str(out), "--max-memory", "1KB"]) == 2
    err = capsys.readouterr().err
    assert "over the --max-memory budget of 1000 B" in err, err
    assert "convert with a smaller --dtype, or raise --max-memory" in err
    assert "--device" not in err and not out.exists()


def test_from_pretrained_of_the_api_takes_a_memory_budget(good: Path) -> None:
    import archcomp
    from archcomp.base.errors import UsageError

    with pytest.raises(UsageError, match="over the --max-memory budget of 1000 B"):
        archcomp.from_pretrained(good, max_memory="1KB")
    model = archcomp.from_pretrained(good, max_memory="1GB")
    assert sum(p.numel() for p in model.parameters()) > 0
