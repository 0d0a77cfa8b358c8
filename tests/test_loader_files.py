"""The loader's files: each read once however often it is imported, every text kept (for
artifacts), imports read from an artifact's sources alone, and bad import paths (symlink
loops, NUL, long names, FIFOs) as located errors."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from archcomp.base.errors import SpecError
from archcomp.frontend import files as spec_files
from archcomp.frontend import loader
from archcomp.frontend.loader import MAX_FILES, load_program

BLOCK = "blocks:\n  b{i}:\n    inputs: [x]\n    nodes: [{{id: r, op: relu}}]\n    outputs: r\n"


def _diamond(folder: Path, n: int, fan: int = 4) -> Path:
    """n library files, each importing the next ``fan`` times; a model using the last block."""
    for i in range(n):
        imports = "" if i == n - 1 else "imports: [" + ", ".join([f"f{i + 1}.yaml"] * fan) + "]\n"
        (folder / f"f{i}.yaml").write_text("archcomp: 1\n" + imports + BLOCK.format(i=i))
    main = folder / "main.yaml"
    main.write_text(
        "archcomp: 1\nname: m\nimports: [f0.yaml]\ninputs: {x: [B, 4]}\n"
        f"nodes:\n  - {{id: a, op: b{n - 1}}}\noutputs: a\n"
    )
    return main


def test_a_diamond_of_imports_reads_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: Counter[str] = Counter()
    real = loader.read_spec_bytes

    def counting(path: Path, display: str | None = None) -> bytes:
        reads[Path(path).name] += 1
        return real(path, display)

    monkeypatch.setattr(loader, "read_spec_bytes", counting)  # the top-level spec
    monkeypatch.setattr(spec_files, "read_spec_bytes", counting)  # its imports
    prog = load_program(_diamond(tmp_path, 15))  # 4^14 paths through the imports
    assert set(reads.values()) == {1} and len(reads) == 16
    assert set(prog.blocks) == {f"b{i}" for i in range(15)}
    assert sorted(prog.sources) == sorted(["main.yaml", *(f"f{i}.yaml" for i in range(15))])
    assert prog.main == "main.yaml"
    assert prog.sources["f3.yaml"] == (tmp_path / "f3.yaml").read_text()


def test_a_failing_import_reached_twice_is_reported_once(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("archcomp: 1\nblocks: [\n")
    (tmp_path / "a.yaml").write_text("archcomp: 1\nimports: [bad.yaml]\n")
    main = tmp_path / "m.yaml"
    main.write_text("archcomp: 1\nname: m\nimports: [a.yaml, bad.yaml, a.yaml]\n")
    with pytest.raises(SpecError) as info:
        load_program(main)
    assert [d.code for d in info.value.diagnostics] == ["yaml-syntax"]


def test_too_many_files_is_refused(tmp_path: Path) -> None:
    names = [f"l{i}.yaml" for i in range(MAX_FILES + 1)]
    for name in names:
        (tmp_path / name).write_text("archcomp: 1\n")
    main = tmp_path / "m.yaml"
    main.write_text("archcomp: 1\nname: m\nimports: [" + ", ".join(names) + "]\n")
    with pytest.raises(SpecError) as info:
        load_program(main)
    assert [d.code for d in info.value.diagnostics] == ["too-many-files"]


def _imports(tmp_path: Path, *paths: str) -> list[Any]:
    main = tmp_path / "m.yaml"
    items = ", ".join(f'"{p}"' for p in paths)
    main.write_text(f"archcomp: 1\nname: m\nimports: [{items}]\n")
    with pytest.raises(SpecError) as info:
        load_program(main)
    return [(d.code, d.loc.line if d.loc else None, d.message) for d in info.value.diagnostics]


def test_bad_import_paths_are_located_errors(tmp_path: Path) -> None:
    os.symlink("loop2.yaml", tmp_path / "loop1.yaml")
    os.symlink("loop1.yaml", tmp_path / "loop2.yaml")
    os.mkfifo(tmp_path / "fifo.yaml")
    got = _imports(tmp_path, "loop1.yaml", "a\\0b.yaml", "x" * 300 + ".yaml", "fifo.yaml")
    codes = [c for c, _, _ in got]
    assert codes == [
        "import-unreadable",
        "import-bad-path",
        "import-unreadable",
        "import-not-a-file",
    ]
    assert all(line == 3 for _, line, _ in got)
    assert "symbolic links" in got[0][2] and "File name too long" in got[2][2]


def test_embedded_sources_are_the_only_files_an_artifact_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lib.yaml").write_text("archcomp: 1\n" + BLOCK.format(i=0))  # on disk only
    monkeypatch.chdir(tmp_path)
    files = {
        "m.yaml": "archcomp: 1\nname: m\nimports: [sub/lib.yaml]\ninputs: {x: [B, 4]}\n"
        "nodes: [{id: a, op: b0}]\noutputs: a\n",
        "sub/lib.yaml": "archcomp: 1\n" + BLOCK.format(i=0),
    }
    prog = load_program("m.yaml", embedded=files)
    assert set(prog.blocks) == {"b0"} and prog.sources == files
    files["sub/lib.yaml"] = "archcomp: 1\nimports: [../lib.yaml, ../../escape.yaml]\n"
    with pytest.raises(SpecError) as info:
        load_program("m.yaml", embedded=files)
    assert [d.code for d in info.value.diagnostics] == ["import-not-found", "import-escape"]


def test_an_escape_from_the_working_folder_names_it_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from the spec's own folder, the hint names that folder, not '.'."""
    spec = tmp_path / "esc.yaml"
    spec.write_text(
        "archcomp: 1\nname: m\nimports: [../x.yaml]\ninputs: {x: [B, 4]}\n"
        "nodes:\n  - {id: a, op: relu}\noutputs: a\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as exc:
        load_program(Path("esc.yaml"))
    (d,) = exc.value.diagnostics
    assert d.code == "import-escape"
    assert d.hint == f"imports must stay inside {tmp_path.resolve()}"
