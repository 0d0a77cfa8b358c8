"""Diagnostics: every user mistake becomes one of these, located in the spec file.

A diagnostic prints like a compiler error::

    specs/cnn.yaml:14:7: error: node 'fc1' (linear): in_features is 2304 but the input has 4096
       14 |     in_features: 2304
          |                  ^
      = hint: drop in_features; it is inferred from the input

Bounded whatever the spec: at most :data:`MAX_ERRORS` diagnostics are kept per spec (the rest
are counted: "2,000 errors (1,980 not shown)"), a source line is shown as a window of about
:data:`LINE_WIDTH` characters around the caret, and invisible or control characters in file
names, messages and source lines are shown as escapes (see :mod:`archcomp.base.text`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from itertools import compress

from archcomp.base.text import clip, visible

MAX_ERRORS = 20  # diagnostics kept per spec; the rest are only counted
LINE_WIDTH = 160  # characters of a source line shown around the caret
MAX_MESSAGE = 400  # characters of a message or hint (they quote the spec's text)
MAX_CANDIDATES = 2_000  # names a "did you mean" compares against, of those nearest in length


@dataclass(frozen=True)
class Location:
    """A 1-based position in a spec file."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{visible(self.file)}:{self.line}:{self.col}"


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
    notes: tuple[str, ...] = ()  # "= note: ..." lines, e.g. the override a value came from

    def headline(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        ctx = ""
        if self.node is not None:
            ctx = f"node '{self.node}'" + (f" ({self.op})" if self.op else "") + ": "
        return f"{where}error: {_bounded(ctx + self.message)}"

    def format(self) -> str:
        lines = [self.headline()]
        if self.loc is not None and self.source_line is not None:
            num = str(self.loc.line)
            pad = " " * len(num)
            raw = self.source_line.rstrip("\n").replace("\t", " ")
            text, caret = clip(raw, self.loc.col - 1, LINE_WIDTH)
            lines.append(f"  {num} | {text}")
            lines.append(f"  {pad} | {' ' * caret}^")
        for rel in self.related:
            lines.append(f"  = note: see also {rel}")
        for note in self.notes:
            lines.append(f"  = note: {_bounded(note)}")
        if self.hint:
            lines.append(f"  = hint: {_bounded(self.hint)}")
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


def _bounded(text: str) -> str:
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return visible(text)


class SpecError(Exception):
    """Raised with every diagnostic collected for a spec; never a bare traceback."""

    def __init__(self, diagnostics: Sequence[Diagnostic], omitted: int = 0):
        ordered = sorted(diagnostics, key=_position)
        self.diagnostics = ordered[:MAX_ERRORS]
        self.omitted = omitted + len(ordered) - len(self.diagnostics)  # counted, not kept
        super().__init__(self.format())

    def format(self) -> str:
        n = len(self.diagnostics) + self.omitted
        body = "\n".join(d.format() for d in self.diagnostics)
        if self.omitted:
            return body + f"\n{n:,} errors ({self.omitted:,} not shown)"
        return body + (f"\n{n} errors" if n > 1 else "")


def _position(d: Diagnostic) -> tuple[str, int, int]:
    return (d.loc.file, d.loc.line, d.loc.col) if d.loc else ("", 0, 0)


class UsageError(Exception):
    """A mistake on the command line or in an API call (exit status 2)."""


@dataclass
class Reporter:
    """Collects diagnostics so that all errors of a stage are reported together.

    It keeps the first :data:`MAX_ERRORS` and counts the rest; once it is :attr:`full`,
    callers skip work that only improves a message ("did you mean")."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    omitted: int = 0
    _seen: set[tuple[str, Location | None, str]] = field(default_factory=set, repr=False)

    def add(self, diag: Diagnostic) -> None:
        """Keep one diagnostic per place and message: the copies of a repeated block that
        share a mistake are reported once (with the first copy's name)."""
        key = (diag.code, diag.loc, diag.message)
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self.diagnostics) < MAX_ERRORS:
            self.diagnostics.append(diag)
        else:
            self.omitted += 1

    def extend(self, diags: Iterable[Diagnostic]) -> None:
        for d in diags:
            self.add(d)

    def absorb(self, exc: SpecError) -> None:
        """The diagnostics of a failed stage, and its count of the ones not kept."""
        self.extend(exc.diagnostics)
        self.omitted += exc.omitted

    @property
    def failed(self) -> bool:
        return bool(self.diagnostics)

    @property
    def full(self) -> bool:
        """Whether further diagnostics will only be counted (so need no hint)."""
        return len(self.diagnostics) >= MAX_ERRORS

    def raise_if_failed(self) -> None:
        if self.diagnostics:
            raise SpecError(self.diagnostics, self.omitted)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None.

    Linear in the number of candidates, each looked at in C (``map``, ``compress``, a sort by
    ``len``), not by a Python line per name: only names whose length allows difflib's ratio of
    0.6 (between 3/7 and 7/3 of the word's) are compared, at most :data:`MAX_CANDIDATES` of
    them, nearest in length first (ties by name); difflib orders matches by score and then by
    name, so the candidates' order does not matter."""
    names = candidates if isinstance(candidates, list) else list(candidates)
    lowered = word.lower()
    n = len(word)
    same = list(compress(names, map(lowered.__eq__, map(str.lower, names))))
    folded = max(same) if same else None
    fits = range(-(-3 * n // 7), 7 * n // 3 + 1).__contains__  # 7 * len >= 3n, 3 * len <= 7n
    cands = list(compress(names, map(fits, map(len, names))))
    if len(cands) > MAX_CANDIDATES:
        cands = _nearest_in_length(cands, n)
    close = get_close_matches(word, cands, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"did you mean '{folded}'?" if folded is not None else None


def _nearest_in_length(names: list[str], n: int) -> list[str]:
    """The :data:`MAX_CANDIDATES` names nearest in length to ``n``, ties by name: whole
    lengths taken outwards from ``n`` (a sort by ``len``, in C), the last one in name order."""
    names.sort(key=len)
    lengths = list(map(len, names))
    rings: dict[int, list[int]] = {}  # distance from n -> the lengths at that distance
    for length in set(lengths):
        rings.setdefault(abs(length - n), []).append(length)
    out: list[str] = []
    for d in sorted(rings):
        ring = [
            name
            for length in rings[d]
            for name in names[bisect_left(lengths, length) : bisect_right(lengths, length)]
        ]
        if len(out) + len(ring) >= MAX_CANDIDATES:
            ring.sort()
            return out + ring[: MAX_CANDIDATES - len(out)]
        out += ring
    return out


def listing(names: Sequence[str], limit: int = 10) -> str:
    """``a, b, c`` for a hint; past ``limit`` names, the first ones and a count of the rest."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")
