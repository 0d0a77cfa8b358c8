"""Key patterns of a mapping: ``transformer.h.{i}.ln_{1,2}.weight``.

A pattern is literal text with two kinds of braces:

- ``{i}``, a placeholder (a lowercase name): any decimal index, the same on both sides of a rule
  (``transformer.h.{i}.ln_1.weight -> h_.{i}.ln_1.weight``);
- ``{a,b,...}``, alternatives (two or more, comma-separated): the rule is written once for each.
  Alternatives on both sides pair up in order (``ln_{1,2} -> ln_{1,2}``: ``ln_1 -> ln_1`` and
  ``ln_2 -> ln_2``); on one side only they name the parts of a ``split`` or ``concat``.

:func:`parse` reads a pattern (a :class:`PatternError` says what is wrong and at which
character); :meth:`Pattern.expansions` gives its alternatives' expansions, each a :class:`Key`
with placeholders only, which matches concrete keys (:meth:`Key.match`) and formats them
(:meth:`Key.format`). :class:`KeyIndex` finds the keys a concrete name may match without
trying every rule: a name is compared only with the patterns of its shape, so matching a
checkpoint against a mapping is linear in keys + rules.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
_TEXT = re.compile(r"[A-Za-z0-9_.\-]*\Z")
MAX_INDEX_DIGITS = 18  # a placeholder's value is below 10**18 (int64), never a huge int()
_INDEX = rf"(0|[1-9][0-9]{{0,{MAX_INDEX_DIGITS - 1}}})"
_DIGITS = re.compile(r"([0-9]+)")
_RUNS = re.compile("([0-9\x00]+)")  # digits, and placeholders written as NUL
_NOT_INDEX = re.compile(rf"(?m)^(0[0-9]|[0-9]{{{MAX_INDEX_DIGITS + 1}}})")  # in runs, a line each
MAX_ALTERNATIVES = 64
T = TypeVar("T")


class PatternError(Exception):
    """A malformed pattern; ``offset`` is the 0-based character the problem starts at."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class Key:
    """A pattern with its alternatives chosen: literal text and placeholders."""

    parts: tuple[str, ...]  # even positions: literal text; odd positions: placeholder names

    @property
    def names(self) -> tuple[str, ...]:
        return self.parts[1::2]

    @property
    def regex(self) -> re.Pattern[str]:
        """The pattern as a regex, compiled once per key (not at every match)."""
        found = self.__dict__.get("_regex")
        if found is None:  # a cache in the instance (functools.cached_property takes a lock)
            body = "".join(
                [re.escape(p) if i % 2 == 0 else _INDEX for i, p in enumerate(self.parts)]
            )
            found = self.__dict__["_regex"] = re.compile(body + r"\Z")
        return found

    @property
    def shape(self) -> tuple[str, tuple[str | None, ...], tuple[str, ...] | None]:
        """The key's skeleton (each run of digits, placeholders included, as ``#``), each
        run's literal digits (None for a run holding a placeholder; see :func:`shape_of`),
        and the placeholder of each such run when each is exactly one placeholder (no
        literal digits beside it, the usual ``h.{i}.ln``), else None."""
        found = self.__dict__.get("_shape")
        if found is None:
            found = self.__dict__["_shape"] = self._shape()
        return found

    def _shape(self) -> tuple[str, tuple[str | None, ...], tuple[str, ...] | None]:
        pieces = _RUNS.split("\x00".join(self.parts[::2]))  # text, run, text, ..., text
        holes: tuple[str, ...] | None = self.names
        literal: list[str | None] = []
        for run in pieces[1::2]:
            if "\x00" in run:
                holes = holes if run == "\x00" else None
                literal.append(None)
            else:
                literal.append(run)
        return "#".join(pieces[::2]), tuple(literal), holes

    def match(self, key: str) -> dict[str, int] | None:
        """The placeholders' values if ``key`` is an instance of this pattern, else None (an
        index of more than :data:`MAX_INDEX_DIGITS` digits matches no placeholder)."""
        m = self.regex.match(key)
        if m is None:
            return None
        values: dict[str, int] = {}
        for name, text in zip(self.names, m.groups(), strict=True):
            if values.setdefault(name, int(text)) != int(text):
                return None
        return values

    def format(self, values: dict[str, int]) -> str:
        # literal text holds no braces (see _TEXT), so the key's text is a str.format template
        return str(self).format_map(values)

    def __str__(self) -> str:
        text = self.__dict__.get("_text")
        if text is None:  # a cache in the instance, as for regex
            text = self.__dict__["_text"] = "".join(
                [p if i % 2 == 0 else "{" + p + "}" for i, p in enumerate(self.parts)]
            )
        return text


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern: literal text, placeholders and alternative groups, in order."""

    text: str
    items: tuple[tuple[str, str | tuple[str, ...]], ...]  # ("text"|"name"|"alts", value)
    plain: Key | None = field(default=None, compare=False)  # the one key, if no alternatives

    @property
    def groups(self) -> list[tuple[str, ...]]:
        """The alternative groups, in order."""
        if self.plain is not None:
            return []
        return [v for kind, v in self.items if kind == "alts" and isinstance(v, tuple)]

    @property
    def names(self) -> set[str]:
        if self.plain is not None:
            return set(self.plain.names)
        return {v for kind, v in self.items if kind == "name" and isinstance(v, str)}

    def expand(self, choice: tuple[int, ...]) -> Key:
        """The key for one choice per alternative group (``choice[g]`` picks in group g)."""
        if self.plain is not None:
            return self.plain
        parts: list[str] = [""]
        g = 0
        for kind, value in self.items:
            if kind == "text" and isinstance(value, str):
                parts[-1] += value
            elif kind == "alts" and isinstance(value, tuple):
                parts[-1] += value[choice[g]]
                g += 1
            elif isinstance(value, str):
                parts.extend([value, ""])
        return Key(tuple(parts))

    def expansions(self) -> list[Key]:
        """Every expansion, in the order the alternatives are written."""
        if self.plain is not None:
            return [self.plain]
        ranges = [range(len(g)) for g in self.groups]
        return [self.expand(c) for c in itertools.product(*ranges)]


# A pattern of literal text and placeholders only (no alternatives), the usual rule: read by
# one regex and a split. Anything else (alternatives, or any mistake) takes :func:`_parse`.
_PLAIN = re.compile(r"(?:[A-Za-z0-9_.\-]|\{[a-z_][a-z0-9_]*\})+\Z")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def plain_key(text: str) -> Key | None:
    """The key of a pattern of literal text and placeholders only, each placeholder once;
    None for any other text (alternatives, or a mistake: :func:`parse` says which)."""
    if not _PLAIN.match(text):
        return None
    parts = _PLACEHOLDER.split(text)  # literal, name, literal, ..., literal
    if len(parts) > 3 and len(set(parts[1::2])) != len(parts) // 2:
        return None  # a placeholder twice
    # Key(tuple(parts)) without the frozen dataclass's __init__ (one object.__setattr__ per
    # field: a fifth of reading a 100,000-rule mapping), and str(key), known already
    key = object.__new__(Key)
    fields = key.__dict__
    fields["parts"] = tuple(parts)
    fields["_text"] = text
    return key


def plain_keys(texts: Sequence[str]) -> list[Key | None]:
    """:func:`plain_key` of each text, its regex match and split done by one ``map`` each
    (the keys of a 100,000-rule mapping)."""
    new, out = object.__new__, list[Key | None]()
    append = out.append
    oks, splits = map(_PLAIN.match, texts), map(_PLACEHOLDER.split, texts)
    for text, ok, parts in zip(texts, oks, splits, strict=True):
        if ok is None or (len(parts) > 3 and len(set(parts[1::2])) != len(parts) // 2):
            append(None)
            continue
        key = new(Key)  # as in plain_key
        fields = key.__dict__
        fields["parts"] = tuple(parts)
        fields["_text"] = text
        append(key)
    return out


def parse(text: str) -> Pattern:
    """Read a pattern; a :class:`PatternError` for unbalanced braces, empty or odd parts."""
    key = plain_key(text)
    if key is not None:
        items = [("name" if i % 2 else "text", p) for i, p in enumerate(key.parts) if p]
        return Pattern(text, tuple(items), key)
    return _parse(text)


def _parse(text: str) -> Pattern:
    """:func:`parse`, character by character: alternatives, and every mistake located."""
    if not text:
        raise PatternError("a key pattern is empty")
    items: list[tuple[str, str | tuple[str, ...]]] = []
    names: set[str] = set()
    i = 0
    while i < len(text):
        brace = text.find("{", i)
        close = text.find("}", i)
        if close != -1 and (brace == -1 or close < brace):
            raise PatternError("'}' without a matching '{'", close)
        end = len(text) if brace == -1 else brace
        if end > i:
            _literal(text, i, end)
            items.append(("text", text[i:end]))
        if brace == -1:
            break
        close = text.find("}", brace)
        nested = text.find("{", brace + 1)
        if close == -1 or (nested != -1 and nested < close):
            raise PatternError("'{' without a matching '}'", brace)
        inner = text[brace + 1 : close]
        if "," in inner:
            alts = tuple(inner.split(","))
            for a in alts:
                if not a:
                    raise PatternError("an empty alternative in '{" + inner + "}'", brace)
                _literal(a, 0, len(a), brace + 1)
            if len(set(alts)) != len(alts):
                raise PatternError("an alternative is written twice in '{" + inner + "}'", brace)
            if len(alts) > MAX_ALTERNATIVES:
                raise PatternError(f"more than {MAX_ALTERNATIVES} alternatives", brace)
            items.append(("alts", alts))
        else:
            if not _NAME.match(inner):
                raise PatternError(
                    f"'{{{inner}}}' is neither a placeholder (a lowercase name such as {{i}}) "
                    "nor alternatives (two or more, comma-separated: {q,k,v})",
                    brace,
                )
            if inner in names:
                raise PatternError(f"placeholder '{{{inner}}}' appears twice", brace)
            names.add(inner)
            items.append(("name", inner))
        i = close + 1
    count = 1
    for kind, value in items:
        if kind == "alts":
            count *= len(value)
    if count > MAX_ALTERNATIVES:
        raise PatternError(f"the alternatives expand to more than {MAX_ALTERNATIVES} keys")
    return Pattern(text, tuple(items))


def _literal(text: str, begin: int, end: int, shift: int = 0) -> None:
    piece = text[begin:end]
    if not _TEXT.match(piece):
        bad = next(j for j, c in enumerate(piece) if not _TEXT.match(c))
        raise PatternError(
            f"character {piece[bad]!r} is not allowed in a key (letters, digits, '_', '.', '-')",
            shift + begin + bad,
        )


def shape_of(name: str) -> tuple[str, tuple[str, ...]]:
    """A concrete name's skeleton (digit runs as ``#``) and its digit runs. A key matches a
    pattern only if their skeletons are equal and the pattern's literal runs are the name's."""
    pieces = _DIGITS.split(name)  # text, digits, text, ..., text
    return "#".join(pieces[::2]), tuple(pieces[1::2])


Binding = tuple[tuple[str, int], ...]  # placeholder values, sorted by placeholder name
Entry = tuple[Key, T, tuple[str, ...] | None]  # pattern, payload, its placeholders (shape[2])


@dataclass
class _Layout(Generic[T]):
    """The patterns of one skeleton whose literal digit runs are at the same positions."""

    literal: tuple[int, ...]  # positions of the literal runs
    holes: tuple[int, ...]  # positions of the others (placeholders)
    table: dict[object, list[Entry[T]]]  # literal runs (one: the run itself) -> patterns
    simple: bool = True  # one hole, holding one placeholder; one pattern per table entry

    def key(self, runs: Sequence[str]) -> object:
        """The table's key for a name's digit runs (a str for one literal run, else a tuple)."""
        if len(self.literal) == 1:
            return runs[self.literal[0]]
        return tuple([runs[i] for i in self.literal])


@dataclass
class KeyIndex(Generic[T]):
    """Patterns (each with a payload) indexed by skeleton and literal digit runs, so finding
    the patterns a name matches costs one lookup per distinct placeholder layout of its
    skeleton rather than one regex per pattern."""

    _skeletons: dict[str, list[_Layout[T]]] = field(default_factory=dict)
    _sizes: dict[str, int] = field(default_factory=dict)  # patterns per skeleton

    @classmethod
    def of(cls, entries: Iterable[tuple[Key, T]]) -> KeyIndex[T]:
        index: KeyIndex[T] = cls()
        for key, payload in entries:
            index.add(key, payload)
        return index

    def add(self, key: Key, payload: T) -> None:
        skeleton, runs, names = key.shape
        literal = tuple([i for i, r in enumerate(runs) if r is not None]) if runs else ()
        layouts = self._skeletons.get(skeleton)
        if layouts is None:
            layouts = self._skeletons[skeleton] = []
        for layout in layouts:
            if layout.literal == literal:
                break
        else:
            holes = tuple([i for i, r in enumerate(runs) if r is None])
            layout = _Layout(literal, holes, {})
            layouts.append(layout)
        if not literal:
            at: object = ()
        elif len(literal) == 1:
            at = runs[literal[0]]  # as _Layout.key reads a name's runs
        else:
            at = tuple([runs[i] for i in literal])
        found = layout.table.get(at)
        if found is None:
            layout.table[at] = [(key, payload, names)]
        else:
            found.append((key, payload, names))
        if found is not None or names is None or len(names) != 1 or len(layout.holes) != 1:
            layout.simple = False
        self._sizes[skeleton] = self._sizes.get(skeleton, 0) + 1

    def sole(self, key: Key) -> bool:
        """Whether ``key`` (added) is the only pattern any name formatted from it can match:
        the only one of its skeleton, each placeholder a run of digits of its own."""
        skeleton, _, holes = key.shape
        return holes is not None and self._sizes.get(skeleton) == 1

    def find(self, name: str) -> list[tuple[Key, T, dict[str, int]]]:
        """Every (pattern, payload, placeholder values) that ``name`` matches, in the order
        the patterns were added within each layout."""
        return [(key, payload, dict(values)) for key, payload, values in self.bindings(name)]

    def bindings(self, name: str) -> list[tuple[Key, T, Binding]]:
        """:meth:`find` with the values as a :data:`Binding`. The hot path of matching a
        checkpoint: one regex split, a dict lookup or two, no call per placeholder."""
        out: list[tuple[Key, T, Binding]] = []
        if "#" in name:  # no pattern holds a '#': it would only fake a skeleton's digit run
            return out
        pieces = _DIGITS.split(name)  # text, digits, text, ..., text
        layouts = self._skeletons.get("#".join(pieces[::2]) if len(pieces) > 1 else name)
        if layouts is None:
            return out
        runs = pieces[1::2]
        for layout in layouts:
            found = layout.table.get(layout.key(runs) if layout.literal else ())
            if not found:
                continue
            places = layout.holes
            holes = runs if len(places) == len(runs) else [runs[i] for i in places]
            for key, payload, names in found:
                binding: Binding | None
                if names is None or len(names) != 1:
                    binding = _binding(key, name, names, holes)
                else:  # one placeholder, the usual rule
                    text = holes[0]
                    if len(text) > MAX_INDEX_DIGITS or (text[0] == "0" and len(text) > 1):
                        continue  # a leading zero, or too many digits: no index
                    binding = ((names[0], int(text)),)
                if binding is not None:
                    out.append((key, payload, binding))
        return out

    def columns(
        self, names: Sequence[str], every: bool = False
    ) -> tuple[list[Column[T]], list[int]]:
        """The names that can match only one pattern each, read in bulk, and the positions
        of the others whose skeleton a pattern has (:meth:`bindings` tells which they match;
        a name of no pattern's skeleton matches none, and is among the others only if
        ``every``). A :class:`Column` holds names of one
        skeleton that has one layout, a :attr:`_Layout.simple` one, whose one placeholder
        run is a valid index in each (a name whose literal runs no pattern has matches none).
        """
        count = len(names)
        joined = "\n".join(names)
        if "#" in joined or joined.count("\n") != count - 1:  # a name with '#' or a newline
            return [], list(range(count))
        known = self._skeletons
        columns: list[Column[T]] = []
        rest: list[int] = []
        for skeleton, at in _by_skeleton(known, joined, rest if every else None).items():
            layouts = known[skeleton]
            layout = layouts[0]
            if len(layouts) != 1 or not layout.simple:
                rest.extend(at)
                continue
            width = skeleton.count("#")
            runs = _DIGITS.findall("\n".join([names[i] for i in at]))  # width per name
            texts = runs[layout.holes[0] :: width]
            if _NOT_INDEX.search("\n".join(texts)):  # a leading zero, or too many digits
                rest.extend(at)
                continue
            literal = layout.literal
            keys: list[object] | None = None
            if len(literal) == 1:
                keys = runs[literal[0] :: width]
            elif literal:
                keys = list(zip(*[runs[j::width] for j in literal], strict=True))
            columns.append(Column(layout, at, keys, texts))
        rest.sort()
        return columns, rest

    def bindings_many(self, names: Sequence[str]) -> list[list[tuple[Key, T, Binding]]]:
        """:meth:`bindings` of each of ``names``, in bulk: every name's skeleton from one regex
        substitution over all of them, and the digit runs of the names of one skeleton from
        one ``findall``, read as columns (a run's position in the skeleton). The Python left
        per name is a dict lookup or two; the result is the same, name for name."""
        count = len(names)
        joined = "\n".join(names)
        if "#" in joined or joined.count("\n") != count - 1:  # a name with '#' or a newline
            return [self.bindings(name) for name in names]
        out: list[list[tuple[Key, T, Binding]]] = [[] for _ in range(count)]
        known = self._skeletons
        for skeleton, at in _by_skeleton(known, joined).items():
            width = skeleton.count("#")
            if width == 0:  # a name without digits is its skeleton
                for i in at:
                    out[i] = self.bindings(names[i])
                continue
            runs = _DIGITS.findall("\n".join([names[i] for i in at]))  # width per name
            for layout in known[skeleton]:
                _layout_bindings(layout, names, at, runs, width, out)
        return out


@dataclass
class Column(Generic[T]):
    """Names of one skeleton and layout (see :meth:`KeyIndex.columns`), with their runs."""

    layout: _Layout[T]
    at: list[int]  # the names' positions
    keys: list[object] | None  # each name's table key (None: the layout has no literal run)
    texts: list[str]  # each name's placeholder run, a valid index

    def entries(self) -> list[Entry[T] | None]:
        """The one pattern each name matches, or None."""
        table = self.layout.table
        if self.keys is None:
            found = table.get(())
            return [found[0] if found else None] * len(self.at)
        return [f[0] if f else None for f in map(table.get, self.keys)]


def _by_skeleton(
    known: dict[str, list[_Layout[T]]], joined: str, others: list[int] | None = None
) -> dict[str, list[int]]:
    """The positions of the names (``joined`` by newlines, none holding '#' or a newline) of
    each skeleton in ``known``; those of the other names appended to ``others``, if given."""
    groups: dict[str, list[int]] = {}
    for i, skeleton in enumerate(_DIGITS.sub("#", joined).split("\n")):
        if skeleton in known:
            at = groups.get(skeleton)
            if at is None:
                groups[skeleton] = [i]
            else:
                at.append(i)
        elif others is not None:
            others.append(i)
    return groups


def _layout_bindings(
    layout: _Layout[T],
    names: Sequence[str],
    at: list[int],
    runs: list[str],
    width: int,
    out: list[list[tuple[Key, T, Binding]]],
) -> None:
    """:meth:`KeyIndex.bindings_many` for the names at positions ``at`` (one skeleton, whose
    digit runs are ``runs``, ``width`` per name) and one layout of that skeleton."""
    literal, places, table = layout.literal, layout.holes, layout.table
    keys: Iterable[object]
    if not literal:
        keys = itertools.repeat(())
    elif len(literal) == 1:
        keys = runs[literal[0] :: width]
    else:
        keys = zip(*[runs[j::width] for j in literal], strict=True)
    holes: Iterable[Sequence[str]]
    if not places:  # every run literal
        holes = itertools.repeat(())
    elif len(places) == 1:
        holes = zip(runs[places[0] :: width], strict=True)
    else:
        holes = zip(*[runs[j::width] for j in places], strict=True)
    for i, k, hole in zip(at, keys, holes, strict=False):  # keys, holes may be repeat(())
        found = table.get(k)
        if not found:
            continue
        for key, payload, names_ in found:
            binding: Binding | None
            if names_ is None or len(names_) != 1:
                binding = _binding(key, names[i], names_, hole)
            else:  # one placeholder, the usual rule
                text = hole[0]
                if len(text) > MAX_INDEX_DIGITS or (text[0] == "0" and len(text) > 1):
                    continue  # a leading zero, or too many digits: no index
                binding = ((names_[0], int(text)),)
            if binding is not None:
                out[i].append((key, payload, binding))


def _binding(
    key: Key, name: str, names: tuple[str, ...] | None, holes: Sequence[str]
) -> Binding | None:
    """The placeholders' values, sorted by name, from the hole runs of digits (a key whose
    placeholders each fill a run) or the key's regex; None if one is not an index (a
    leading zero, or more than :data:`MAX_INDEX_DIGITS` digits)."""
    if names is None:
        values = key.match(name)
        return None if values is None else tuple(sorted(values.items()))
    pairs = []
    for hole, text in zip(names, holes, strict=True):
        if len(text) > MAX_INDEX_DIGITS or (len(text) > 1 and text[0] == "0"):
            return None
        pairs.append((hole, int(text)))
    return tuple(sorted(pairs))
