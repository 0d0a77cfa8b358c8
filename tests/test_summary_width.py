"""``archcomp summary --depth all`` on a narrow terminal: every line fits, the shape and number
columns are whole, and every node and op name is whole once its wrapped lines are read
together (none cut short with '…', whichever the name)."""

from __future__ import annotations

import pytest

import archcomp
from archcomp.backends.torch.summary_render import _cells
from archcomp.cli import console
from archcomp.cli.main import main


def _table(text: str, shape_at: int) -> list[list[str]]:
    """The table's rows (above the totals), each a list of its lines: a row's first line has
    its shape and numbers, the lines of its wrapped names none."""
    lines = text.splitlines()
    rows: list[list[str]] = []
    for line in lines[2 : lines.index("")]:
        if line[shape_at:].strip() or not rows:
            rows.append([line])
        else:
            rows[-1].append(line)
    return rows


@pytest.mark.parametrize("width", [80, 100])
def test_a_narrow_terminal_wraps_names_and_keeps_numbers(
    width: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(console, "isatty", lambda stream: True)  # as on a terminal
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert main(["summary", "gpt2", "--depth", "all"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= width and "…" not in out
    header = out.splitlines()[0]
    op_at, shape_at = header.index("op"), header.index("output shape")
    want = [_cells(r) for r in archcomp.summary("gpt2").rows_at(None)]
    rows = _table(out, shape_at)
    assert len(rows) == len(want)
    for lines, cells in zip(rows, want, strict=True):
        node = "".join(line[:op_at].strip() for line in lines)
        op = "".join(line[op_at:shape_at].strip() for line in lines)
        assert node == cells[0].strip() and op.replace(" ", "") == cells[1].replace(" ", "")
        assert lines[0][shape_at:].split() == " ".join(cells[2:]).split()  # whole, one line
