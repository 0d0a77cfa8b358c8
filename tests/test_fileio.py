"""Atomic writes keep the previous file on failure and leave no temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from archcomp.base.fileio import (
    NotRegularFile,
    OutputExists,
    TooLarge,
    open_regular,
    read_regular,
    write_all,
    write_atomic,
    write_bytes_atomic,
)


def test_replaces_and_respects_umask(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    old = os.umask(0o022)
    try:
        write_bytes_atomic(target, b"new")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failure_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


def test_all_or_nothing_a_failing_second_output_leaves_the_first_untouched(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "a.py", tmp_path / "b.bin"
    first.write_text("old a")

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_all([(first, lambda t: t.write_text("new a")), (second, fail)], overwrite=True)
    assert first.read_text() == "old a" and not second.exists()
    assert _names(tmp_path) == ["a.py"]


def test_folders_made_for_a_failed_write_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "new" / "sub" / "x.svg"

    def fail(tmp: Path) -> None:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        write_all([(target, fail)], overwrite=True)
    assert _names(tmp_path) == []
    write_all([(target, lambda t: t.write_text("<svg/>"))], overwrite=True)
    assert target.read_text() == "<svg/>"


def test_no_replace_loses_to_a_file_that_appears_while_writing(tmp_path: Path) -> None:
    """A concurrent build that finished first: the link refuses, its file stays."""
    target, other = tmp_path / "m.safetensors", tmp_path / "m.py"

    def slow(tmp: Path) -> None:
        tmp.write_bytes(b"mine")
        target.write_bytes(b"theirs")  # the other writer wins meanwhile

    with pytest.raises(OutputExists):
        write_all([(other, lambda t: t.write_text("py")), (target, slow)], overwrite=False)
    assert target.read_bytes() == b"theirs"
    assert _names(tmp_path) == ["m.safetensors"]  # the first output was taken back too


def test_no_replace_names_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    write_bytes_atomic(target, b"one", overwrite=False)
    with pytest.raises(OutputExists):
        write_bytes_atomic(target, b"two", overwrite=False)
    assert target.read_bytes() == b"one" and _names(tmp_path) == ["out.bin"]


def test_a_failed_rename_puts_back_the_outputs_renamed_before_it(tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b"
    first.write_text("old")
    second.mkdir()  # renaming a file over a folder fails
    with pytest.raises(OSError):
        write_all(
            [(first, lambda t: t.write_text("new")), (second, lambda t: t.write_text("x"))],
            overwrite=True,
        )
    assert first.read_text() == "old"
    assert _names(tmp_path) == ["a.txt", "b"]


def test_the_same_path_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same path"):
        write_all([(tmp_path / "x", print), (tmp_path / "." / "x", print)], overwrite=True)


def test_open_regular_refuses_what_is_not_a_file_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    for path, kind in ((tmp_path / "fifo", "a FIFO"), (tmp_path, "a directory")):
        with pytest.raises(NotRegularFile, match=kind):
            open_regular(path)
    with pytest.raises(OSError, match="NUL"):
        open_regular(tmp_path / "a\0b")
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(TooLarge):
        read_regular(tmp_path / "big", 10)
    assert read_regular(tmp_path / "big", 11) == b"x" * 11
