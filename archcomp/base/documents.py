"""A located text: a spec file's lines and the line and column of every key and value.

Diagnostics point into it by path, e.g. ``("nodes", 2, "out_features")``; every layer that
reports an error at a spec position holds one (the IR keeps it in each node's ``Origin``).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archcomp.base.errors import Diagnostic, Location

YamlPath = tuple[str | int, ...]


class Marks(MutableMapping[YamlPath, tuple[int, int]]):
    """Positions by path: a dict of ``path -> (line, column)`` (1-based), most of it kept as
    the YAML reader made it: for each mapping or sequence's path, its entries' marks (objects
    with 0-based ``line`` and ``column``) by key or index. A 100,000-rule mapping then costs
    no path tuple or position tuple per entry; a position is made when one is asked for."""

    def __init__(self, own: dict[YamlPath, tuple[int, int]] | None = None) -> None:
        self.own: dict[YamlPath, tuple[int, int]] = dict(own or {})
        self.levels: dict[YamlPath, dict[Any, Any] | list[Any]] = {}

    def _mark(self, path: YamlPath) -> Any:
        if not path:
            return None
        level = self.levels.get(path[:-1])
        if level is None:
            return None
        last = path[-1]
        if type(level) is list:
            ok = type(last) is int and 0 <= last < len(level)  # not a bool
            return level[last] if ok else None  # type: ignore[index]
        return level.get(last)  # type: ignore[union-attr]

    def __getitem__(self, path: YamlPath) -> tuple[int, int]:
        found = self.own.get(path)
        if found is not None:
            return found
        mark = self._mark(path)
        if mark is None:
            raise KeyError(path)
        return (mark.line + 1, mark.column + 1)

    def __contains__(self, path: object) -> bool:
        return path in self.own or (type(path) is tuple and self._mark(path) is not None)

    def __setitem__(self, path: YamlPath, pos: tuple[int, int]) -> None:
        self.own[path] = pos

    def __delitem__(self, path: YamlPath) -> None:
        del self.own[path]  # the reader's marks are not deleted

    def __iter__(self) -> Iterator[YamlPath]:
        yield from self.own
        for parent, level in self.levels.items():
            keys = range(len(level)) if type(level) is list else level
            for k in keys:
                if (*parent, k) not in self.own:
                    yield (*parent, k)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class SourceDoc:
    """A loaded spec file: its text and the positions of every key and value."""

    file: str
    path: Path | None
    lines: list[str]
    value_marks: Marks = field(default_factory=Marks)
    key_marks: Marks = field(default_factory=Marks)

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
