"""Hostile cases that are not "one spec, one error": refusals whose text depends on the
machine, things that must succeed safely, and set-ups a spec file cannot carry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from archcomp.cli import main

LINEAR_1E9 = """archcomp: 1
name: huge
inputs: {x: [B, 1000000000]}
nodes:
  - {id: fc, op: linear, out_features: 1000000000}
outputs: fc
"""


def test_linear_1e9_is_refused_from_the_estimate_before_allocating(tmp_path: Path) -> None:
    """Without --max-memory the device's free memory is the budget; the refusal gives the
    estimate and what to do, and comes before torch allocates anything."""
    spec = tmp_path / "huge.yaml"
    spec.write_text(LINEAR_1E9)
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "archcomp", "build", str(spec), "-o", str(out / "m.safetensors")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "1,000,000,001,000,000,000 parameters" in r.stderr
    assert "TiB" in r.stderr and "--device meta" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_max_memory_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "mlp.yaml"
    spec.write_text(LINEAR_1E9.replace("1000000000", "1000"))
    code = main(["build", str(spec), "-o", str(tmp_path / "m.safetensors"), "--max-memory", "1KB"])
    err = capsys.readouterr().err
    assert code == 2 and "--max-memory budget" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_a_batch_of_1e12_allocates_nothing_of_its_size(tmp_path: Path) -> None:
    """A declared batch is a shape, not an allocation: build writes the tiny model's weights."""
    spec = tmp_path / "batch.yaml"
    spec.write_text(
        "archcomp: 1\nname: batch\ninputs: {x: [1000000000000, 4]}\n"
        "nodes:\n  - {id: fc, op: linear, out_features: 2}\noutputs: fc\n"
    )
    out = tmp_path / "b.safetensors"
    assert main(["build", str(spec), "-o", str(out)]) == 0
    assert out.stat().st_size < 2000


def test_labels_cannot_inject_dot_or_html(tmp_path: Path) -> None:
    spec = tmp_path / "labels.yaml"
    spec.write_text(
        "archcomp: 1\nname: labels\ninputs: {x: [B, 4]}\nnodes:\n"
        "  - {id: fc, op: linear, out_features: 2,\n"
        '     label: "<<b>x</b>> \\"]; evil [label=\\"pwned\\"]; \\\\N '
        '<img src=x onerror=alert(1)>"}\n'
        "  - {id: r, op: relu, label: \"<script>alert('x')</script>\\n}\\n digraph { a -> b }\"}\n"
        "outputs: r\n"
    )
    dot = tmp_path / "l.dot"
    assert main(["draw", str(spec), "-o", str(dot)]) == 0
    text = dot.read_text()
    assert "evil" in text  # the text is there ...
    assert "<script>" not in text and "<img" not in text and "<b>" not in text  # ... escaped
    assert text.count("->") == 3  # x -> fc -> r -> output: no injected edge
    if shutil.which("dot"):  # Graphviz's own reading: exactly the four nodes and three edges
        plain = subprocess.run(
            ["dot", "-Tplain", str(dot)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        nodes = {line.split()[1].strip('"<>') for line in plain if line.startswith("node ")}
        assert nodes == {"input/x", "fc", "r", "output/r"}
        assert sum(line.startswith("edge ") for line in plain) == 3
    svg = tmp_path / "l.svg"
    assert main(["draw", str(spec), "-o", str(svg)]) == 0
    body = svg.read_text()
    assert "<script" not in body and "<img" not in body and "onerror=alert(1)>" not in body


def test_import_through_a_symlink_out_of_the_tree_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "lib.yaml").write_text("archcomp: 1\nblocks: {}\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(outside / "lib.yaml", tree / "lib.yaml")
    spec = tree / "m.yaml"
    spec.write_text(
        "archcomp: 1\nname: m\nimports: [lib.yaml]\ninputs: {x: [B, 4]}\n"
        "nodes:\n  - {id: fc, op: linear, out_features: 2}\noutputs: fc\n"
    )
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "leaves the spec's directory tree" in err and f"{spec}:3:11:" in err


def test_a_fifo_or_device_as_spec_is_refused_without_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    assert main(["check", str(fifo)]) == 2  # the file itself is wrong: a usage error
    assert main(["check", "/dev/zero"]) == 2
    err = capsys.readouterr().err
    assert "is not a regular file" in err
