"""A located text: a spec file's lines and the line and column of every key and value.

Diagnostics point into it by path, e.g. ``("nodes", 2, "out_features")``; every layer that
reports an error at a spec position holds one (the IR keeps it in each node's ``Origin``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archcomp.base.errors import Diagnostic, Location

YamlPath = tuple[str | int, ...]


@dataclass
class SourceDoc:
    """A loaded spec file: its text and the positions of every key and value."""

    file: str
    path: Path | None
    lines: list[str]
    value_marks: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)

    def __repr__(self) -> str:  # the text and marks would be thousands of characters
        return f"SourceDoc({self.file!r}, {len(self.lines)} lines)"

    def loc(self, path: YamlPath, key: bool = False) -> Location:
        """Location of the value (or key) at path, falling back to the nearest parent."""
        p = tuple(path)
        while True:
            marks = self.key_marks if key else self.value_marks
            if p in marks:
                line, col = marks[p]
                return Location(self.file, line, col)
            if key and p in self.value_marks:
                line, col = self.value_marks[p]
                return Location(self.file, line, col)
            if not p:
                return Location(self.file, 1, 1)
            p = p[:-1]

    def line_text(self, line: int) -> str | None:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else None

    def diag(
        self,
        code: str,
        message: str,
        path: YamlPath = (),
        *,
        key: bool = False,
        node: str | None = None,
        op: str | None = None,
        hint: str | None = None,
        related: tuple[Location, ...] = (),
    ) -> Diagnostic:
        loc = self.loc(path, key)
        return Diagnostic(code, message, loc, node, op, hint, self.line_text(loc.line), related)

    def error_at(self, code: str, message: str, line: int, col: int, **kw: Any) -> Diagnostic:
        loc = Location(self.file, line, col)
        return Diagnostic(code, message, loc, source_line=self.line_text(line), **kw)
