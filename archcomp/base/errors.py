"""Diagnostics: every user mistake becomes one of these, located in the spec file.

A diagnostic prints like a compiler error::

    specs/cnn.yaml:14:7: error: node 'fc1' (linear): in_features is 2304 but the input has 4096
       14 |     in_features: 2304
          |                  ^
      = hint: drop in_features; it is inferred from the input
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches


@dataclass(frozen=True)
class Location:
    """A 1-based position in a spec file."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One error: machine code, location, message, optional node context and hint."""

    code: str
    message: str
    loc: Location | None = None
    node: str | None = None
    op: str | None = None
    hint: str | None = None
    source_line: str | None = None
    related: tuple[Location, ...] = ()

    def headline(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        ctx = ""
        if self.node is not None:
            ctx = f"node '{self.node}'" + (f" ({self.op})" if self.op else "") + ": "
        return f"{where}error: {ctx}{self.message}"

    def format(self) -> str:
        lines = [self.headline()]
        if self.loc is not None and self.source_line is not None:
            num = str(self.loc.line)
            pad = " " * len(num)
            text = self.source_line.rstrip("\n").expandtabs(1)
            lines.append(f"  {num} | {text}")
            lines.append(f"  {pad} | {' ' * (self.loc.col - 1)}^")
        for rel in self.related:
            lines.append(f"  = note: see also {rel}")
        if self.hint:
            lines.append(f"  = hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        """The diagnostic as plain data (pydantic-style: type, loc, msg)."""
        return {
            "type": self.code,
            "file": self.loc.file if self.loc else None,
            "line": self.loc.line if self.loc else None,
            "column": self.loc.col if self.loc else None,
            "node": self.node,
            "op": self.op,
            "msg": self.message,
            "hint": self.hint,
        }


class SpecError(Exception):
    """Raised with every diagnostic collected for a spec; never a bare traceback."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=_position)
        super().__init__(self.format())

    def format(self) -> str:
        n = len(self.diagnostics)
        body = "\n".join(d.format() for d in self.diagnostics)
        return body + (f"\n{n} errors" if n > 1 else "")


def _position(d: Diagnostic) -> tuple[str, int, int]:
    return (d.loc.file, d.loc.line, d.loc.col) if d.loc else ("", 0, 0)


class UsageError(Exception):
    """A mistake on the command line or in an API call (exit status 2)."""


@dataclass
class Reporter:
    """Collects diagnostics so that all errors of a stage are reported together."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    _seen: set[tuple[str, Location | None, str]] = field(default_factory=set, repr=False)

    def add(self, diag: Diagnostic) -> None:
        """Keep one diagnostic per place and message: the copies of a repeated block that
        share a mistake are reported once (with the first copy's name)."""
        key = (diag.code, diag.loc, diag.message)
        if key not in self._seen:
            self._seen.add(key)
            self.diagnostics.append(diag)

    def extend(self, diags: Iterable[Diagnostic]) -> None:
        for d in diags:
            self.add(d)

    @property
    def failed(self) -> bool:
        return bool(self.diagnostics)

    def raise_if_failed(self) -> None:
        if self.diagnostics:
            raise SpecError(self.diagnostics)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None."""
    cands = sorted(set(candidates))
    close = get_close_matches(word, cands, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in cands}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f"did you mean '{close[0]}'?" if close else None
