"""Safe YAML loading with source positions.

The spec is read from the YAML event stream (libyaml when available) into plain Python values,
with the line and column of every key and value recorded by path, e.g.
``("nodes", 2, "out_features")``. No Python object is ever constructed from a tag.

Read as YAML 1.2's core schema with strict typing: ``yes``/``no``/``on``/``off`` and ``1:30``
are strings, ``017`` is refused as ambiguous. Refused outright: anchors and aliases, merge keys,
tags other than the core ones, duplicate keys (both lines cited), non-string keys, several
documents, files over :data:`MAX_BYTES`, nesting deeper than :data:`MAX_DEPTH`.

These limits are archcomp's own and give the same located error under every PyYAML: where the
YAML library stops first (libyaml 0.2.6, in PyYAML 6.0.4's wheels, refuses 1,000 nested levels
while its scanner looks ahead), the text is read again with PyYAML's pure-Python parser, which
has no limit of its own, so archcomp's check sees the nesting and reports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.base.errors import Diagnostic, Location, SpecError, UsageError
from archcomp.base.fileio import NotRegularFile, TooLarge, read_regular

MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_EVENTS = 1_000_000  # a 20,000-node spec is about 150,000
MAX_INT_DIGITS = 100  # far past int64; Python refuses int() of 4,300+ digits with ValueError


INT_LIMIT = 10**MAX_INT_DIGITS  # every integer in a spec is below this, in any spelling


def decimal_digits(value: int) -> str:
    """How many decimal digits ``abs(value)`` has, for a message ("6,021" or "about 1,204,120"),
    without printing it: Python refuses to print an int of 4,300 digits or more."""
    v = abs(value)
    if v.bit_length() < 4000:
        return f"{len(str(v)):,}"
    return f"about {int(v.bit_length() * 0.3010299956639812) + 1:,}"  # log10(2)


_Parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PurePython: Any = yaml.SafeLoader
_LIBRARY_DEPTH_LIMIT = "maximum nesting depth"  # libyaml's "exceeded maximum nesting depth"

_INT = re.compile(r"[-+]?[0-9]+\Z")
_OCT = re.compile(r"0o[0-7]+\Z")
_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_INFS = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"}
_NINFS = {"-.inf", "-.Inf", "-.INF"}
_NANS = {".nan", ".NaN", ".NAN"}
_CORE = "tag:yaml.org,2002:"
_NUMBER_START = frozenset("+-.0123456789")  # the first characters of ints, floats, .inf, .nan
_WORDS = frozenset(_NULLS | _TRUE | _FALSE)  # the plain scalars that are not strings, but numbers


def _fail(doc: SourceDoc, code: str, message: str, mark: Any, hint: str | None = None) -> SpecError:
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return SpecError([doc.error_at(code, message, line, col, hint=hint)])


def _resolve_plain(text: str, doc: SourceDoc, mark: Any) -> Any:
    """YAML 1.2 core-schema resolution of a plain (unquoted) scalar."""
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text[0] not in _NUMBER_START:  # most scalars are names: no number pattern can match
        return text
    if _INT.match(text):
        digits = text.lstrip("+-")
        if len(digits) > MAX_INT_DIGITS:
            raise _fail(
                doc,
                "yaml-number-too-large",
                f"an integer of {len(digits):,} digits; archcomp reads at most {MAX_INT_DIGITS}",
                mark,
            )
        if len(digits) > 1 and digits[0] == "0":
            raise _fail(
                doc,
                "yaml-ambiguous-number",
                f"'{text}' has a leading zero, which YAML 1.1 reads as octal",
                mark,
                hint=f"write {int(text, 10)} (decimal), 0o{digits[1:]} (octal) or quote it",
            )
        return int(text)
    if _OCT.match(text) or _HEX.match(text):
        value = int(text[2:], 8 if text[1] == "o" else 16)
        if value >= INT_LIMIT:  # the value is limited, whatever its spelling
            raise _fail(
                doc,
                "yaml-number-too-large",
                f"an integer of {decimal_digits(value)} digits; archcomp reads at most "
                f"{MAX_INT_DIGITS}",
                mark,
            )
        return value
    if _FLOAT.match(text):
        return float(text)
    if text in _INFS:
        return float("inf")
    if text in _NINFS:
        return float("-inf")
    if text in _NANS:
        return float("nan")
    return text


def _resolve_tagged(tag: str, text: str, doc: SourceDoc, mark: Any) -> Any:
    if tag in ("!", _CORE + "str"):
        return text
    kind = tag[len(_CORE) :] if tag.startswith(_CORE) else None
    if kind in ("int", "float", "bool", "null"):
        value = _resolve_plain(text, doc, mark)
        want: Any = {"int": int, "float": (int, float), "bool": bool, "null": type(None)}[kind]
        if isinstance(value, want) and not (kind != "bool" and isinstance(value, bool)):
            return float(value) if kind == "float" else value
        raise _fail(doc, "yaml-tag", f"'{text}' is not a valid !!{kind}", mark)
    raise _fail(
        doc,
        "yaml-tag",
        f"tag '{_short_tag(tag)}' is not allowed in a spec",
        mark,
        hint="specs use plain YAML values only; no tags construct objects",
    )


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


def _check_collection_tag(tag: str | None, kind: str, doc: SourceDoc, mark: Any) -> None:
    if tag not in (None, "!", _CORE + kind):
        raise _fail(
            doc,
            "yaml-tag",
            f"tag '{_short_tag(tag)}' is not allowed in a spec",
            mark,
            hint="specs use plain YAML values only; no tags construct objects",
        )


_UNQUOTED_EXPR = re.compile(r"""(^|[\s{\[,:])\$\{""")


def _syntax_hint(problem: str, line: str | None) -> str | None:
    """The usual cause of a YAML syntax error in a spec, when the line shows it."""
    if line is None:
        return None
    if _UNQUOTED_EXPR.search(line) and ("{" in line.split("${")[0] or "expected ','" in problem):
        return 'quote expressions inside {...} or [...]: out_features: "${4 * d_model}"'
    if "mapping values are not allowed" in problem:
        key = _LEADING_KEY.match(line)
        if key:  # 'in: x' alone on its line: a key indented deeper than those above it
            return (
                f"'{key.group(1)}:' is indented more than the keys above it; align it with "
                "them (a deeper key reads as part of the value above)"
            )
        return "quote a value that contains ': ', e.g. label: \"Act: ReLU\""
    return None


_LEADING_KEY = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w.-]*):(?:\s|$)(?!.*:\s)")


def decode(data: bytes, file: str) -> str:
    """UTF-8 text of a spec, or a located error for invalid bytes."""
    empty = SourceDoc(file, None, [])
    if len(data) > MAX_BYTES:
        raise SpecError(
            [
                Diagnostic(
                    "spec-too-large",
                    f"spec is {len(data):,} bytes; the limit is {MAX_BYTES:,}",
                    Location(file, 1, 1),
                )
            ]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError(
            [
                empty.error_at(
                    "invalid-utf8", f"invalid UTF-8 byte 0x{data[exc.start]:02x}", line, col
                )
            ]
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        col = nul - (text.rfind("\n", 0, nul) + 1) + 1
        raise SpecError(
            [
                SourceDoc(file, None, text.splitlines()).error_at(
                    "invalid-character", "NUL byte in spec", line, col
                )
            ]
        )
    return text


class _LibraryDepthLimit(Exception):
    """The YAML library refused the nesting before archcomp's own check saw it."""


def load_yaml(text: str, file: str, path: Path | None = None) -> tuple[Any, SourceDoc]:
    """Parse one YAML document into plain values plus a :class:`SourceDoc`."""
    try:
        return _read_events(text, file, path, _Parser)
    except _LibraryDepthLimit:
        # libyaml's scanner looks ahead through a run of '[' and stops at its own depth limit
        # before the parser yields archcomp's 65th level; the pure-Python parser reads the same
        # grammar without a limit, so MAX_DEPTH fires at the same place as on any other PyYAML.
        # Only such a text pays for it: ~20x libyaml's time, under 30 s for 8 MiB of YAML.
        return _read_events(text, file, path, _PurePython)


def _read_events(text: str, file: str, path: Path | None, parser: Any) -> tuple[Any, SourceDoc]:
    """Read ``text``'s YAML events with ``parser`` into plain values and their positions."""
    reader = _EventReader(SourceDoc(file, path, text.splitlines()))
    loader = parser(text)
    try:
        # the parser's events straight from its get_event (no generator between: yaml.parse
        # costs a fifth of reading a 100,000-rule mapping); None after the stream's end
        reader.read(iter(loader.get_event, None))
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, reader.doc, parser) from None
    except yaml.YAMLError as exc:
        raise SpecError(
            [Diagnostic("yaml-syntax", f"invalid YAML: {exc}", Location(file, 1, 1))]
        ) from None
    except RecursionError:
        raise _fail(reader.doc, "spec-too-deep", "spec nests too deeply", None) from None
    finally:
        loader.dispose()
    if not reader.have_root or reader.root is None:
        raise SpecError(
            [
                Diagnostic(
                    "empty-spec",
                    "spec is empty",
                    Location(file, 1, 1),
                    hint="a spec is a mapping with at least 'name' and 'nodes'",
                )
            ]
        )
    return reader.root, reader.doc


def _syntax_error(exc: yaml.MarkedYAMLError, doc: SourceDoc, parser: Any) -> SpecError:
    """The YAML library's error, located, with a hint for the usual causes (tabs, colons)."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if _LIBRARY_DEPTH_LIMIT in problem:
        if parser is not _PurePython:
            raise _LibraryDepthLimit from None
        # A pure-Python parser with a limit of its own (none has one yet): the same error,
        # at the library's mark.
        return _fail(doc, "spec-too-deep", _too_deep_message(), mark)
    hint = None
    line = doc.line_text(mark.line + 1) if mark is not None else None
    if "\t" in problem or (line is not None and "\t" in line[: mark.column + 1]):
        hint = "YAML does not allow tabs for indentation; use spaces"
    else:
        hint = _syntax_hint(problem, line)
    return _fail(doc, "yaml-syntax", f"invalid YAML: {problem}", mark, hint=hint)


@dataclass
class _Level:
    """A mapping or sequence being read, and where it is. ``keys`` and ``values`` are the
    YAML library's marks (0-based line and column) of its keys and values, by key (a list by
    index for a sequence); the document's :class:`~archcomp.base.documents.Marks` hold them."""

    container: dict[str, Any] | list[Any]
    path: YamlPath
    key: Any  # a mapping's key waiting for its value, or _NO_KEY
    keys: dict[str, Any] = field(default_factory=dict)  # key -> mark
    values: dict[str, Any] | list[Any] = field(default_factory=dict)  # key or index -> mark


class _EventReader:
    """Builds plain values from YAML events, recording each key's and value's position, and
    refuses what a spec may not hold (aliases, a second document, deep nesting, ...)."""

    def __init__(self, doc: SourceDoc) -> None:
        self.doc = doc
        self.stack: list[_Level] = []
        self.root: Any = None
        self.have_root = False
        self.docs = 0  # documents begun
        self.count = 0  # events read

    def read(self, events: Iterable[Any]) -> None:
        """Take every event of the stream: :meth:`event`, with the usual one (a plain word,
        no tag or anchor, as a mapping's key or value) taken inline, without its calls."""
        stack, scalar = self.stack, yaml.ScalarEvent
        for event in events:
            if type(event) is scalar and stack and self.count < MAX_EVENTS:
                text = event.value
                top = stack[-1]
                if (
                    event.anchor is None
                    and event.tag is None
                    and not event.style
                    and event.implicit[0]
                    and text
                    and text[0] not in _NUMBER_START
                    and text not in _WORDS
                    and type(top.container) is dict
                ):
                    key = top.key
                    if key is not _NO_KEY:  # a value: _attach
                        top.container[key] = text
                        top.values[key] = event.start_mark  # type: ignore[call-overload]
                        top.key = _NO_KEY
                        self.count += 1
                        continue
                    if text != "<<" and text not in top.keys:  # a new key: _key
                        top.keys[text] = event.start_mark
                        top.key = text
                        self.count += 1
                        continue
            self.event(event)

    def event(self, event: Any) -> None:
        """Take one event of the stream."""
        doc = self.doc
        self.count += 1
        if self.count > MAX_EVENTS:
            raise _fail(doc, "spec-too-large", "spec has too many YAML items", event.start_mark)
        if type(event) is yaml.ScalarEvent and event.anchor is None:  # most events
            self._attach(_scalar(event, doc), event.start_mark, True)
            return
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent) or anchor is not None:
            raise _fail(
                doc,
                "yaml-alias",
                "anchors and aliases are not supported in a spec",
                event.start_mark,
                hint="write the value out, or use a block",
            )
        if isinstance(event, yaml.ScalarEvent):
            self._attach(_scalar(event, doc), event.start_mark, True)
        elif isinstance(event, yaml.DocumentStartEvent):
            self.docs += 1
            if self.docs > 1:
                raise _fail(
                    doc,
                    "yaml-multiple-documents",
                    "a spec file holds one YAML document; found a second",
                    event.start_mark,
                )
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            self._open(event)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            self.stack.pop()

    def _open(self, event: Any) -> None:
        """A mapping or sequence begins: attach it, then read into it."""
        doc, stack = self.doc, self.stack
        is_map = isinstance(event, yaml.MappingStartEvent)
        _check_collection_tag(event.tag, "map" if is_map else "seq", doc, event.start_mark)
        if len(stack) >= MAX_DEPTH:
            raise _fail(doc, "spec-too-deep", _too_deep_message(), event.start_mark)
        new: Any = {} if is_map else []
        if stack and isinstance(stack[-1].container, dict) and stack[-1].key is _NO_KEY:
            raise _fail(
                doc,
                "yaml-key",
                "mapping keys must be strings, found a collection",
                event.start_mark,
            )
        parent_path: YamlPath = ()
        if stack:
            top = stack[-1]
            cont = top.container
            parent_path = (*top.path, len(cont) if isinstance(cont, list) else top.key)
        self._attach(new, event.start_mark, False)
        level = _Level(new, parent_path, _NO_KEY, {}, [] if type(new) is list else {})
        stack.append(level)
        if is_map:
            doc.key_marks.levels[parent_path] = level.keys
        doc.value_marks.levels[parent_path] = level.values

    def _attach(self, value: Any, mark: Any, is_key_candidate: bool) -> None:
        """Put ``value`` where the stream is: the root, a sequence's next entry, a mapping's
        next key, or the value of the key before it."""
        if not self.stack:
            self.root, self.have_root = value, True
            self.doc.value_marks[()] = (mark.line + 1, mark.column + 1)
            return
        top = self.stack[-1]
        container = top.container
        if isinstance(container, list):
            container.append(value)
            top.values.append(mark)  # type: ignore[union-attr]
            return
        if top.key is _NO_KEY:
            self._key(top, value, mark, is_key_candidate)
            return
        key = top.key
        container[key] = value
        top.values[key] = mark  # type: ignore[call-overload]
        top.key = _NO_KEY

    def _key(self, top: _Level, value: Any, mark: Any, is_key_candidate: bool) -> None:
        """``value`` is the next key of the mapping ``top``: a string, not seen before."""
        doc = self.doc
        pos = (mark.line + 1, mark.column + 1)
        if not is_key_candidate or not isinstance(value, str):
            shown = "null" if value is None else repr(value)
            raise _fail(
                doc,
                "yaml-key",
                f"mapping keys must be strings, found {shown}",
                mark,
                hint="quote the key",
            )
        if value == "<<":
            raise _fail(doc, "yaml-merge-key", "merge keys ('<<') are not supported", mark)
        if value in top.keys:
            first = (top.keys[value].line + 1, top.keys[value].column + 1)
            raise SpecError(
                [
                    doc.error_at(
                        "duplicate-key",
                        f"duplicate key '{value}'",
                        pos[0],
                        pos[1],
                        related=(Location(doc.file, first[0], first[1]),),
                        hint=f"first defined at line {first[0]}",
                    )
                ]
            )
        top.keys[value] = mark
        top.key = value


def _scalar(event: Any, doc: SourceDoc) -> Any:
    """A scalar event's value: plain text resolved by the core schema, tags checked."""
    if event.tag is None and event.implicit[0] and not event.style:
        return _resolve_plain(event.value, doc, event.start_mark)
    if event.tag is not None and event.tag != "!":
        return _resolve_tagged(event.tag, event.value, doc, event.start_mark)
    return event.value


def _too_deep_message() -> str:
    return f"spec nests deeper than {MAX_DEPTH} levels"


class _NoKey:
    def __repr__(self) -> str:
        return "<no key>"


_NO_KEY: Any = _NoKey()


class SpecFileError(UsageError):
    """The spec file itself is missing or unreadable: a usage error, with no position in it."""


def read_spec_file(path: Path, display: str | None = None) -> tuple[Any, SourceDoc]:
    """Read and parse a spec file, refusing oversized or non-regular files first (decided on
    the open file: a FIFO is refused without waiting for a writer)."""
    return load_yaml(
        decode(read_spec_bytes(path, display), display or str(path)), display or str(path), path
    )


def read_spec_bytes(path: Path, display: str | None = None) -> bytes:
    """The bytes of a spec file; a :class:`SpecFileError` (a usage error) if it is missing or
    unreadable, a :class:`SpecError` at its first line if it is too large."""
    file = display or str(path)
    try:
        return read_regular(path, MAX_BYTES)
    except TooLarge as exc:
        problem = f"spec is {exc.size:,} bytes; the limit is {MAX_BYTES:,}"
        raise SpecError([Diagnostic("spec-too-large", problem, Location(file, 1, 1))]) from None
    except FileNotFoundError:
        raise SpecFileError(f"spec file '{file}' does not exist") from None
    except NotRegularFile as exc:
        raise SpecFileError(f"spec file '{file}' is {exc.strerror}") from None
    except OSError as exc:
        raise SpecFileError(f"cannot read spec file '{file}': {exc.strerror or exc}") from None
