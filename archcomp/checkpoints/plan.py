"""Matching a mapping against a checkpoint's keys and a model's tensors, before any data moves.

The plan is strict: every checkpoint tensor is used by a rule or explicitly dropped; every
model tensor is filled exactly once; each rule's transforms turn the checkpoint's shapes into
the model's; a checkpoint tensor a ``tie`` names exists (its values are compared when read).
Every gap is a diagnostic naming the keys, with "did you mean" among the keys left over on
the other side, and the rule's line in the mapping.

:func:`plan_import` goes from checkpoint keys to model keys (``convert``,
``from_pretrained``); :func:`plan_export` from model keys to checkpoint keys (``export``).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field, fields, replace
from itertools import compress
from typing import Any

from archcomp.base import gcpause
from archcomp.base.errors import Diagnostic, Reporter, did_you_mean
from archcomp.checkpoints.mapping import Mapping, Rule
from archcomp.checkpoints.patterns import MAX_INDEX_DIGITS, Key, KeyIndex
from archcomp.checkpoints.transforms import Transform, TransformError

Shape = tuple[int, ...]
MAX_SHOWN = 10  # diagnostics of one kind shown before "and N more"
_INDEX = re.compile(r"(?<=\.)[0-9]+(?=\.|$)")
_INDEX_LINES = re.compile(_INDEX.pattern, re.MULTILINE)  # _INDEX in keys one a line


@dataclass(slots=True)
class Step:
    """One rule applied at one binding of its placeholders."""

    rule: Rule
    values: dict[str, int]
    hf: list[str]
    spec: list[str]
    transforms: list[Transform]
    hf_shapes: list[Shape] = field(default_factory=list)


@dataclass
class Plan:
    steps: list[Step]
    ties: list[tuple[str, str, Rule]]  # checkpoint key, the checkpoint key it must equal, rule
    dropped: list[str]


class _Capped:
    """Collects diagnostics: one per rule and kind (the others counted on it: a mistake in a
    rule repeats in every layer), and at most :data:`MAX_SHOWN` of each kind. A diagnostic
    is made (its "did you mean" computed) only when it will be shown, so a checkpoint with
    every tensor renamed costs no more hints than one with a single typo."""

    def __init__(self) -> None:
        self.diags: list[Diagnostic] = []
        self.more: list[int] = []
        self.groups: dict[tuple[str, object], int] = {}
        self.counts: dict[str, int] = {}
        self.labels: dict[str, str] = {}

    def add(
        self,
        kind: str,
        make: Diagnostic | Callable[[], Diagnostic],
        label: str,
        rule: Rule | None = None,
        key: str = "",
    ) -> None:
        """Count a problem and, if it is shown, add ``make()``; one per ``rule``, or per
        ``key`` with its indices generalized (``h.0.ln_1.bias`` and ``h.1.ln_1.bias`` are one
        problem, in two layers)."""
        group: object = rule.path if rule is not None else _INDEX.sub("{i}", key) if key else None
        if group is not None and (kind, group) in self.groups:
            self.more[self.groups[(kind, group)]] += 1
            return
        n = self.counts.get(kind, 0)
        self.counts[kind] = n + 1
        self.labels[kind] = label
        if n < MAX_SHOWN:
            if group is not None:
                self.groups[(kind, group)] = len(self.diags)
            self.diags.append(make() if callable(make) else make)
            self.more.append(0)

    def repeat(self, kind: str, rule: Rule | None = None, key: str = "") -> bool:
        """Whether this problem repeats one already shown (for ``rule``, or ``key`` with its
        indices generalized), counted on it: the cheap test before making a diagnostic's
        maker, for a stage that may find one problem per key."""
        group: object = rule.path if rule is not None else _INDEX.sub("{i}", key) if key else None
        at = self.groups.get((kind, group)) if group is not None else None
        if at is None:
            return False
        self.more[at] += 1
        return True

    def raise_if_failed(self) -> None:
        rep = Reporter()
        for d, more in zip(self.diags, self.more, strict=True):
            if more:
                d = replace(d, message=f"{d.message} (and {more} more like it)")
            rep.add(d)
        for kind, n in self.counts.items():
            if n > MAX_SHOWN:
                rep.add(Diagnostic(kind, f"... and {n - MAX_SHOWN} more {self.labels[kind]}"))
        rep.raise_if_failed()


class RuleIndex:
    """A mapping's rules indexed by their keys on either side (:class:`KeyIndex`): the rules
    a name matches, in the mapping's order, without trying every rule."""

    def __init__(self, rules: Sequence[Rule]):
        self._rules = rules
        self._sides: dict[str, KeyIndex[tuple[int, int, Rule]]] = {}

    def side(self, side: str) -> KeyIndex[tuple[int, int, Rule]]:
        """The index of one side, built when first asked (a plan with every tensor filled
        never looks a model key up)."""
        index = self._sides.get(side)
        if index is None:
            index = self._sides[side] = KeyIndex.of(
                (k, (n, j, rule))
                for n, rule in enumerate(self._rules)
                for j, k in enumerate(rule.hf if side == "hf" else rule.spec)
            )
        return index

    def find(self, side: str, key: str) -> list[tuple[int, Rule, int, dict[str, int]]]:
        """(the rule's position, rule, which of its keys, placeholder values) for every rule
        ``key`` matches on ``side`` ("hf" or "spec"), in the mapping's order."""
        found = self.side(side).find(key)
        if len(found) > 1:  # one rule, nearly always
            found.sort(key=lambda f: f[1][:2])
        return [(n, rule, j, values) for _, (n, j, rule), values in found]

    def sole(self, side: str, key: Key) -> bool:
        """Whether every name formatted from ``key`` (a key of a rule) matches that rule only."""
        return self.side(side).sole(key)

    def match(self, side: str, key: str) -> list[tuple[Rule, int, dict[str, int]]]:
        """(rule, which of its keys, placeholder values) for every rule ``key`` matches."""
        found = self.side(side).find(key)
        if len(found) > 1:
            found.sort(key=lambda f: f[1][:2])
        return [(rule, j, values) for _, (_, j, rule), values in found]


def _unused_hint(name: str, unused: Sequence[str]) -> str | None:
    close = did_you_mean(name, unused)
    return (
        f"is a rule for the unused checkpoint tensor '{close[14:-2]}' missing?" if close else None
    )


def _long_index_hint(key: str) -> str | None:
    runs = [len(r) for r in re.findall(r"[0-9]+", key)]
    if runs and max(runs) > MAX_INDEX_DIGITS:
        return (
            f"its name holds a number of {max(runs):,} digits; a placeholder's index has at "
            f"most {MAX_INDEX_DIGITS}"
        )
    return None


def _resolve(
    mapping: Mapping,
    rule: Rule,
    env: MappingABC[str, object],
    parts: int,
    out: _Capped,
) -> list[Transform] | None:
    resolved: list[Transform] = []
    for j, spec in enumerate(rule.transforms):
        try:
            resolved.append(spec.resolve(env, len(rule.hf) if spec.name == "stack" else parts))
        except TransformError as exc:
            path = (*rule.path, "transforms", j, *exc.where)
            diag = mapping.diag("invalid-transform", exc.message, path, hint=exc.hint)
            out.add("invalid-transform", diag, "transform problems", rule=rule)
            return None
    return resolved


def run_shapes(transforms: Sequence[Transform], shapes: Sequence[Shape]) -> list[Shape]:
    out = list(shapes)
    for t in transforms:
        out = t.shapes(out)
    return out


Hint = Callable[[], str | None] | str | None
Binding = tuple[int, tuple[tuple[str, int], ...]]  # a rule's index, its placeholder values


@dataclass
class _Import:
    """The state of one :func:`plan_import`, built up stage by stage."""

    mapping: Mapping
    env: MappingABC[str, object]
    checkpoint: MappingABC[str, Shape]
    model: MappingABC[str, Shape]
    aliases: MappingABC[str, str]
    weights: str
    index: RuleIndex
    out: _Capped = field(default_factory=_Capped)
    groups: dict[Binding, str | dict[int, str]] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    ties: list[tuple[str, str, Rule]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    filled: dict[str, Step | Shape] = field(default_factory=dict)  # model key: step or shape
    strays: list[tuple[str, Step]] = field(default_factory=list)  # model keys the model lacks
    wanted: dict[str, str] = field(default_factory=dict)  # lacking checkpoint key -> model key
    fast: bool = True  # plain copies planned in bulk (_bulk_copies)
    first: dict[Binding, int] = field(default_factory=dict)  # a group's first key's position
    slots: list[Step | None] = field(default_factory=list)  # steps at their first key's place
    bulk: dict[str, Step] = field(default_factory=dict)  # model key -> bulk step filling it

    def diag(
        self, code: str, message: str, rule: Rule, hint: Hint = None, **kw: Any
    ) -> Callable[[], Diagnostic]:
        """A diagnostic at ``rule``'s key, made (and its ``hint`` computed) when shown."""

        def make() -> Diagnostic:
            text = hint() if callable(hint) else hint
            return self.mapping.diag(code, message, rule.path, key=True, hint=text, **kw)

        return make


def plan_import(
    mapping: Mapping,
    env: MappingABC[str, object],
    checkpoint: MappingABC[str, Shape],
    model: MappingABC[str, Shape],
    aliases: MappingABC[str, str],
    weights: str,
) -> Plan:
    """Steps from the checkpoint's tensors (name -> shape) to the model's canonical tensors
    (name -> shape; ``aliases`` are the spec's tied names). ``weights`` names the checkpoint
    file in messages. Raises :class:`SpecError` with every problem.

    In stages: match each checkpoint key to its rule, group the keys of one rule binding into
    a step, find the model tensors no step fills and the checkpoint tensors no rule uses,
    check the ties, then each step's transforms and shapes. Linear in keys + rules."""
    with gcpause.paused():  # O(keys) objects, all live until the plan returns
        st = _Import(mapping, env, checkpoint, model, aliases, weights, RuleIndex(mapping.rules))
        try:
            _match_keys(st)
            _group_steps(st)
        except _Contested:  # a model key both a bulk copy and another step fill: key by key
            st = replace(st, fast=False, **_fresh())
            _match_keys(st)
            _group_steps(st)
        _unfilled(st)
        _report_unused(st)
        _check_ties(st)
        _check_steps(st)
    st.out.raise_if_failed()
    return Plan(st.steps, st.ties, st.dropped)


class _Contested(Exception):
    """A model key that a bulk copy fills is filled by another step too: the plan is made
    again key by key, so that the diagnostic names the two in the checkpoint's order."""


def _fresh() -> dict[str, Any]:
    """The fields of an :class:`_Import` that its stages fill, empty."""
    return {f.name: f.default_factory() for f in fields(_Import) if callable(f.default_factory)}


def _match_keys(st: _Import) -> None:
    """Each checkpoint key to its one rule: a drop, a tie, or part of a rule binding (the
    key itself for a rule of one checkpoint key, else its parts by position)."""
    keys = list(st.checkpoint)
    unused = bytearray(b"\x01") * len(keys)  # 1: no rule uses the key at that position
    general: Sequence[int] = _bulk_copies(st, keys, unused) if st.fast else range(len(keys))
    names = keys if len(general) == len(keys) else [keys[i] for i in general]
    groups, first = st.groups, st.first
    found_all = st.index.side("hf").bindings_many(names)
    for i, key, found in zip(general, names, found_all, strict=True):
        if not found:
            continue
        unused[i] = 0
        if len(found) > 1:  # one rule, nearly always
            found.sort(key=lambda f: f[1][:2])
            if len({f[1][0] for f in found}) > 1:
                _ambiguous(st, key, found[0][1][2], found[1][1][2])
                continue
        _, (n, j, rule), binding = found[0]
        kind = rule.kind
        if kind == "drop":
            st.dropped.append(key)
        elif kind == "tie":
            assert rule.tie_to is not None
            st.ties.append((key, rule.tie_to.format(dict(binding)), rule))
        elif rule.stack is None and len(rule.hf) == 1:
            groups[(n, binding)] = key
            first[(n, binding)] = i
        else:
            if rule.stack is not None:  # the key's place in the stack: index, then part
                values = dict(binding)
                j += values.pop(rule.stack) * len(rule.hf)
                binding = tuple(sorted(values.items()))
            parts = groups.get((n, binding))
            if isinstance(parts, dict):
                parts[j] = key
            else:
                groups[(n, binding)] = {j: key}
                first[(n, binding)] = i
    st.unused = list(itertools.compress(keys, unused))


def _bulk_copies(st: _Import, keys: list[str], unused: bytearray) -> list[int]:
    """The steps of the keys that only a plain copy can match (one checkpoint key to one
    model key, one placeholder, no transforms: most keys), made in bulk (one ``map`` per
    field, no Python line per step); returns the positions of the other keys, in order.
    Every bulk step's model key exists, is not tied, and is filled by no other bulk step;
    otherwise no step is made in bulk (the stages report each problem key by key)."""
    columns, general = st.index.side("hf").columns(keys)
    formats: dict[int, str | None] = {}  # a rule's model key with "{}" for its placeholder
    at: list[int] = []
    made: list[Rule] = []
    fmts: list[str] = []
    holes: list[str] = []
    texts: list[str] = []
    for column in columns:
        entries = column.entries()
        if column.keys is None:  # one pattern for every name of the column: no loop
            entry = entries[0]
            assert entry is not None  # the layout holds a pattern, and has no literal run
            _, (n, _, rule), names = entry
            f = formats[n] = _copy_format(rule)
            if f is None:
                general.extend(column.at)
                continue
            assert names is not None
            count = len(column.at)
            at += column.at
            made += [rule] * count
            fmts += [f] * count
            holes += [names[0]] * count
            texts += column.texts
            continue
        for i, entry, text in zip(column.at, entries, column.texts, strict=True):
            if entry is None:  # its literal runs are no pattern's: no rule uses it
                continue
            _, (n, _, rule), names = entry
            f = formats.get(n, "")
            if f == "":
                f = formats[n] = _copy_format(rule)
            if f is None:
                general.append(i)
                continue
            at.append(i)
            made.append(rule)
            fmts.append(f)
            assert names is not None
            holes.append(names[0])
            texts.append(text)
    if not at:
        return sorted(general)
    hf = list(map(keys.__getitem__, at))
    spec = list(map(str.format, fmts, texts))
    want = list(map(st.model.get, spec))
    if None in want or len(set(spec)) != len(spec) or any(map(st.aliases.__contains__, spec)):
        return list(range(len(keys)))  # a stray, a key filled twice, a tie: key by key
    have = list(map(st.checkpoint.__getitem__, hf))
    shapes = [[h] if h == w else [] for h, w in zip(have, want, strict=True)]  # [] checked later
    values = list(map(dict, zip(zip(holes, map(int, texts), strict=True))))
    steps = list(
        map(
            Step,
            made,
            values,
            map(list, zip(hf)),
            map(list, zip(spec)),
            map(list, itertools.repeat((), len(at))),
            shapes,
        )
    )
    st.bulk = dict(zip(spec, steps, strict=True))
    slots = st.slots = [None] * len(keys)
    for i, step in zip(at, steps, strict=True):
        slots[i] = step
        unused[i] = 0
    return sorted(general)


def _copy_format(rule: Rule) -> str | None:
    """A plain copy's model key with "{}" where its one placeholder is, else None."""
    if rule.kind != "copy" or rule.transforms or rule.stack is not None or len(rule.spec) != 1:
        return None
    parts = rule.spec[0].parts
    if len(rule.hf) != 1 or len(parts) != 3:
        return None
    return parts[0] + "{}" + parts[2]  # literal text holds no braces (patterns._TEXT)


def _ambiguous(st: _Import, key: str, a: Rule, b: Rule) -> None:
    st.out.add(
        "ambiguous-rule",
        st.diag(
            "ambiguous-rule",
            f"checkpoint tensor '{key}' matches two rules",
            a,
            related=(st.mapping.doc.loc(b.path, key=True),),
        ),
        "ambiguous matches",
    )


def _group_steps(st: _Import) -> None:
    """One step per rule binding whose checkpoint keys are all there; the model keys each
    fills (tied, unknown to the model, or filled twice are problems). A copy of one tensor
    to a model tensor of its shape is checked here, where both shapes are at hand."""
    rules, aliases, steps, checkpoint = st.mapping.rules, st.aliases, st.steps, st.checkpoint
    filled = st.filled = dict(st.model)  # a model key's shape until a step fills it
    filled.update(st.bulk)
    slots, first = st.slots, st.first
    for group, parts in st.groups.items():
        n, vals = group
        rule, values = rules[n], dict(vals)
        if isinstance(parts, str):  # a rule of one checkpoint key
            hf = [parts]
        else:
            hf, missing = _parts(st, rule, values, parts)
            if missing:
                _missing_part(st, rule, hf, missing)
                continue
        templates = rule.spec_templates
        if len(templates) == 1:  # a comprehension is a call: not for one key
            spec = [templates[0].format_map(values)]
        else:
            spec = [t.format_map(values) for t in templates]
        step = Step(rule, values, hf, spec, [])
        if slots:
            slots[first[group]] = step
        else:
            steps.append(step)
        for name in spec:
            shape = filled.get(name)
            if shape is None or isinstance(shape, Step) or name in aliases:
                if name in st.bulk:
                    raise _Contested
                _claim(st, step, name)
                continue
            filled[name] = step  # the usual case of _claim, without the call
            single = len(spec) == 1 and len(hf) == 1 and not rule.transforms
            if single and shape == checkpoint[hf[0]]:  # a copy to the same shape: checked
                step.hf_shapes = [shape]
    if slots:  # bulk steps and the others, in the order of their first checkpoint key
        st.steps = [s for s in slots if s is not None]


def _parts(
    st: _Import, rule: Rule, values: dict[str, int], parts: dict[int, str]
) -> tuple[list[str], list[str]]:
    """The checkpoint keys of a binding of a rule of several keys, and those missing."""
    if rule.stack is not None:
        return _stacked(rule, values, parts)
    if len(parts) == len(rule.hf):  # all there: the matched keys are the formatted ones
        return [parts[j] for j in range(len(parts))], []
    hf = [k.format(values) for k in rule.hf]
    return hf, [h for h in hf if h not in st.checkpoint]


def _missing_part(st: _Import, rule: Rule, hf: list[str], missing: list[str]) -> None:
    if rule.stack is not None:
        more = " and more" if len(missing) > 1 else ""
        message = (
            f"the stack over {{{rule.stack}}} of '{rule.hf[0]}' lacks "
            f"'{missing[0]}'{more} in {st.weights}"
        )
    else:
        message = (
            f"the concat of {', '.join(repr(h) for h in hf)} lacks "
            f"{', '.join(repr(m) for m in missing)} in {st.weights}"
        )
    st.out.add(
        "missing-part",
        st.diag("missing-part", message, rule),
        "incomplete concats",
        rule=rule,
    )


def _stacked(
    rule: Rule, values: dict[str, int], parts: dict[int, str]
) -> tuple[list[str], list[str]]:
    """The checkpoint keys of a stacked rule, part after part and each part in index order
    (0 to the highest index found), and none missing; or the keys found and the first few
    missing (at most 5: a key with index 10**17 names no 10**17 keys)."""
    assert rule.stack is not None
    width = len(rule.hf)
    count = max(parts) // width + 1
    if count * width == len(parts):  # every slot below the highest is there
        return [parts[e * width + j] for j in range(width) for e in range(count)], []
    missing: list[str] = []
    for slot in range(count * width):  # a gap is among the first len(parts) + 1 slots
        if slot not in parts:
            e, j = divmod(slot, width)
            missing.append(rule.hf[j].format({**values, rule.stack: e}))
            if len(missing) > 4:
                break
    return [parts[slot] for slot in sorted(parts)], missing


def _claim(st: _Import, step: Step, name: str) -> None:
    """``step`` fills model tensor ``name``."""
    rule, first = step.rule, step.hf[0]
    if name in st.aliases:
        tied = st.aliases[name]
        message = (
            f"checkpoint tensor '{first}' fills model tensor '{name}', which the spec ties "
            f"to '{tied}'"
        )
        hint = (
            f"fill '{tied}', and check this tensor with "
            f"'{first}: {{tie: <the checkpoint key of {tied}>}}'"
        )
        st.out.add(
            "tied-target",
            st.diag("tied-target", message, rule, hint=hint),
            "tied targets",
            rule=rule,
        )
    elif name not in st.model:
        st.strays.append((name, step))
    elif isinstance(st.filled.get(name), Step):
        other = st.filled[name]
        assert isinstance(other, Step)
        message = f"model tensor '{name}' is filled twice: from '{other.hf[0]}' and from '{first}'"
        related = (st.mapping.doc.loc(other.rule.path, key=True),)
        st.out.add(
            "filled-twice",
            st.diag("filled-twice", message, rule, related=related),
            "tensors filled twice",
            rule=rule,
        )
    else:
        st.filled[name] = step


def _unfilled(st: _Import) -> None:
    """Model tensors no step fills: a rule maps to a name the model lacks, no rule names
    them, or the checkpoint lacks the tensor their rule reads."""
    unfilled = [k for k, s in st.filled.items() if not isinstance(s, Step)]  # model's order
    for name, step in st.strays:
        message = (
            f"checkpoint tensor '{step.hf[0]}' maps to '{name}', which the model does not have"
        )
        st.out.add(
            "unknown-model-key",
            st.diag(
                "unknown-model-key",
                message,
                step.rule,
                hint=functools.partial(did_you_mean, name, unfilled),
            ),
            "keys the model does not have",
            rule=step.rule,
        )
    if not unfilled:
        return
    sole = _wanted(st, unfilled)
    shown, more = st.out.groups, st.out.more
    for h, name in st.wanted.items():
        known = sole[h]  # the rule h matches first: its own if no other can match it
        rule = known if known is not None else st.index.match("hf", h)[0][0]
        at = shown.get(("missing-tensor", rule.path))  # st.out.repeat, without the call
        if at is not None:
            more[at] += 1
            continue
        message = f"model tensor '{name}' needs checkpoint tensor '{h}', which {st.weights} lacks"
        st.out.add(
            "missing-tensor",
            st.diag(
                "missing-tensor",
                message,
                rule,
                hint=functools.partial(did_you_mean, h, st.unused),
            ),
            "checkpoint tensors missing",
            rule=rule,
        )


def _wanted(st: _Import, unfilled: list[str]) -> dict[str, Rule | None]:
    """Fill ``st.wanted`` (each checkpoint key that the rule of an unfilled model tensor reads
    and the checkpoint lacks -> that model tensor) and report the model tensors no rule names.
    Returns, for each wanted key, its rule when no other rule can match it, else None.

    The names only one rule can match, of one placeholder, are read in bulk (their keys
    formatted by ``map``); the others one by one. Both give (position, key, rule) records,
    put in the order of ``unfilled`` (a name's keys in its rule's order) before use."""
    columns, general = st.index.side("spec").columns(unfilled, every=True)
    formats: dict[int, list[tuple[str, bool]] | None] = {}  # a rule's keys' formats
    at: list[int] = []
    fmts: list[str] = []
    texts: list[str] = []
    rules: list[Rule | None] = []
    for column in columns:
        entries = column.entries()
        if column.keys is None:  # one pattern for every name of the column: no loop
            first = entries[0]
            assert first is not None  # the layout holds a pattern, and has no literal run
            one = first[1][2]
            if id(one) not in formats:
                formats[id(one)] = _key_formats(st, one)
            f = formats[id(one)]
            if f is None:
                general += column.at
                continue
            count = len(column.at)
            for fmt, alone in f:  # a name's keys in order once sorted (stable)
                at += column.at
                fmts += [fmt] * count
                texts += column.texts
                rules += [one if alone else None] * count
            continue
        for i, entry, text in zip(column.at, entries, column.texts, strict=True):
            rule = entry[1][2] if entry is not None else None
            f = None
            if rule is not None:
                f = formats.get(id(rule))
                if f is None and id(rule) not in formats:
                    f = formats[id(rule)] = _key_formats(st, rule)
            if f is None:
                general.append(i)
                continue
            for fmt, alone in f:
                at.append(i)
                fmts.append(fmt)
                texts.append(text)
                rules.append(rule if alone else None)
    keys = list(map(str.format, fmts, texts))
    if general:
        general.sort()
        _wanted_one_by_one(st, unfilled, general, (at, keys, rules))
    order = sorted(range(len(at)), key=at.__getitem__)  # stable: a name's keys in order
    keys = [keys[j] for j in order]
    lacking = [h not in st.checkpoint for h in keys]
    names = compress(map(unfilled.__getitem__, map(at.__getitem__, order)), lacking)
    st.wanted.update(zip(compress(keys, lacking), names, strict=True))
    sole = compress(map(rules.__getitem__, order), lacking)
    return dict(zip(compress(keys, lacking), sole, strict=True))


def _key_formats(st: _Import, rule: Rule) -> list[tuple[str, bool]] | None:
    """The checkpoint keys of a rule of one placeholder, not stacked, as formats with "{}"
    where the placeholder is, each with whether no other rule can match it; else None."""
    if rule.kind == "tie" or rule.stack is not None:
        return None
    out = []
    for k in rule.hf:
        if len(k.parts) != 3:
            return None
        out.append((k.parts[0] + "{}" + k.parts[2], st.index.sole("hf", k)))
    return out


def _wanted_one_by_one(
    st: _Import,
    unfilled: list[str],
    general: list[int],
    records: tuple[list[int], list[str], list[Rule | None]],
) -> None:
    """:func:`_wanted` for the names at ``general`` (in order): each name's rule (the first
    not a tie), its keys appended to ``records``, or a diagnostic if it has none."""
    at, keys, rules = records
    names = [unfilled[i] for i in general]
    found_all = st.index.side("spec").bindings_many(names)
    for i, name, found in zip(general, names, found_all, strict=True):
        if len(found) > 1:
            found.sort(key=lambda f: f[1][:2])
        chosen = next((f for f in found if f[1][2].kind != "tie"), None)
        if chosen is None:
            if not st.out.repeat("unfilled", key=name):
                st.out.add(
                    "unfilled", _unfilled_diag(st, name), "model tensors no rule fills", key=name
                )
            continue
        rule = chosen[1][2]
        values = dict(chosen[2])
        if rule.stack is not None:  # the first index of the stack is missing, at least
            values[rule.stack] = 0
        for k in rule.hf:
            at.append(i)
            keys.append(k.format(values))
            rules.append(rule if st.index.sole("hf", k) else None)


def _unfilled_diag(st: _Import, name: str) -> Callable[[], Diagnostic]:
    def make() -> Diagnostic:
        hint = did_you_mean(name, [n for n, _ in st.strays]) or _unused_hint(name, st.unused)
        message = f"model tensor '{name}' is filled by no rule of {st.mapping.file}"
        return Diagnostic("unfilled", message, hint=hint)

    return make


def _report_unused(st: _Import) -> None:
    """Checkpoint tensors no rule uses, each with the likeliest reason."""
    shown, more = st.out.groups, st.out.more
    for key, group in zip(st.unused, _generalized(st.unused), strict=True):
        at = shown.get(("unused-tensor", group))  # st.out.repeat, without the call
        if at is not None:
            more[at] += 1
            continue

        def hint(key: str = key) -> str:
            found = did_you_mean(key, st.wanted) or _long_index_hint(key)
            if found is None and key in st.aliases:
                found = f"the spec ties '{key}' to '{st.aliases[key]}': add a tie rule for it"
            elif found is None and st.index.match("spec", key):
                found = (
                    "a rule writes this as a model key; the checkpoint side of a rule is its key"
                )
            return found or "every checkpoint tensor is mapped, tied or dropped by a rule"

        def make(key: str = key, hint: Callable[[], str] = hint) -> Diagnostic:
            message = f"{st.weights}: tensor '{key}' is used by no rule of {st.mapping.file}"
            return Diagnostic("unused-tensor", message, hint=hint())

        st.out.add("unused-tensor", make, "checkpoint tensors no rule uses", key=key)


def _generalized(keys: list[str]) -> list[str]:
    """Each key with its indices as ``{i}`` (how :class:`_Capped` groups a problem by key),
    by one substitution over all of them (one a line) when no key holds a newline."""
    joined = "\n".join(keys)
    if joined.count("\n") != len(keys) - 1:
        return [_INDEX.sub("{i}", k) for k in keys]
    return _INDEX_LINES.sub("{i}", joined).split("\n") if keys else []


def _check_ties(st: _Import) -> None:
    """Each tie names a checkpoint tensor of the same shape (values are compared on read)."""
    for key, target, rule in st.ties:
        if target not in st.checkpoint:
            message = f"checkpoint tensor '{key}' is tied to '{target}', which {st.weights} lacks"
            hint = functools.partial(did_you_mean, target, st.checkpoint)
            st.out.add(
                "missing-tensor",
                st.diag("missing-tensor", message, rule, hint=hint),
                "checkpoint tensors missing",
                rule=rule,
            )
        elif st.checkpoint[target] != st.checkpoint[key]:
            message = (
                f"checkpoint tensor '{key}' {list(st.checkpoint[key])} is tied to '{target}' "
                f"{list(st.checkpoint[target])}: the shapes differ"
            )
            st.out.add(
                "tie-broken",
                st.diag("tie-broken", message, rule),
                "ties that do not hold",
                rule=rule,
            )


def _check_steps(st: _Import) -> None:
    """Each step's transforms resolved at the spec's params, and the shapes they make."""
    checkpoint, model = st.checkpoint, st.model
    for step in st.steps:
        if step.hf_shapes:  # checked already (_group_steps)
            continue
        hf, spec = step.hf, step.spec
        if len(hf) == 1 and len(spec) == 1 and not step.rule.transforms:  # most steps
            shape = step.hf_shapes = [checkpoint[hf[0]]]
            if shape[0] == model.get(spec[0]):
                continue
            _check_shapes(st.mapping, step, shape, [model.get(spec[0])], st.out)
            continue
        if step.rule.transforms:
            count = max(len(step.rule.hf), len(step.rule.spec))
            resolved = _resolve(st.mapping, step.rule, st.env, count, st.out)
            if resolved is None:
                continue
            step.transforms = resolved
        step.hf_shapes = [checkpoint[h] for h in hf]
        want = [model.get(s) for s in spec]
        if not step.transforms and step.hf_shapes == want:  # a copy to the same shape
            continue
        _check_shapes(st.mapping, step, step.hf_shapes, want, st.out)


def _at_rule(
    mapping: Mapping, code: str, message: str, rule: Rule, hint: str | None = None
) -> Callable[[], Diagnostic]:
    """A maker of a diagnostic at ``rule``'s key (for :meth:`_Capped.add`)."""
    return lambda: mapping.diag(code, message, rule.path, key=True, hint=hint)


def _check_shapes(
    mapping: Mapping,
    step: Step,
    given: list[Shape],
    want: list[Shape | None],
    out: _Capped,
) -> None:
    try:
        made = run_shapes(step.transforms, given)
    except TransformError as exc:
        message = f"'{step.hf[0]}': {exc.message}"
        diag = _at_rule(mapping, "shape-mismatch", message, step.rule, exc.hint)
        out.add("shape-mismatch", diag, "shape mismatches", rule=step.rule)
        return
    for name, m, w in zip(step.spec, made, want, strict=True):
        if w is not None and tuple(m) != tuple(w):
            names = [t.name for t in step.transforms]
            made_text = f"{list(given[0])} gives {list(m)} after {', '.join(names)}"
            if not names:
                made_text = f"is {list(m)}"
            hint = None
            if sorted(m) == sorted(w) and "transpose" not in names:
                hint = "the checkpoint stores it transposed: add the transpose transform"
            message = (
                f"checkpoint tensor '{step.hf[0]}' {made_text}, "
                f"but model tensor '{name}' is {list(w)}"
            )
            diag = _at_rule(mapping, "shape-mismatch", message, step.rule, hint)
            out.add("shape-mismatch", diag, "shape mismatches", rule=step.rule)


def plan_export(
    mapping: Mapping,
    env: MappingABC[str, object],
    model: MappingABC[str, Shape],
) -> list[Step]:
    """Steps from the model's canonical tensors back to checkpoint keys (the inverse of
    :func:`plan_import`); each step's ``transforms`` are the inverses, in the order to apply.
    Tied and dropped checkpoint keys are not written: transformers ties on load, and dropped
    tensors are buffers it rebuilds."""
    out = _Capped()
    rules = [r for r in mapping.rules if r.kind in ("copy", "split", "concat")]
    index = RuleIndex(rules)
    bindings: dict[Binding, None] = {}
    for name in model:
        found = index.find("spec", name)
        if not found:
            message = f"model tensor '{name}' is written by no rule of {mapping.file}"
            out.add(
                "unfilled",
                Diagnostic("unfilled", message),
                "model tensors no rule writes",
                key=name,
            )
            continue
        n, _, _, values = found[0]
        bindings[(n, tuple(sorted(values.items())))] = None
    steps: list[Step] = []
    written: dict[str, Step] = {}
    for n, vals in bindings:
        step = _export_step(mapping, env, model, rules[n], dict(vals), out)
        if step is None:
            continue
        for h in step.spec:
            if h in written:
                message = f"checkpoint key '{h}' is written twice"
                diag = _at_rule(mapping, "filled-twice", message, step.rule)
                out.add("filled-twice", diag, "keys written twice", rule=step.rule)
            written[h] = step
        steps.append(step)
    out.raise_if_failed()
    return steps


def _export_step(
    mapping: Mapping,
    env: MappingABC[str, object],
    model: MappingABC[str, Shape],
    rule: Rule,
    values: dict[str, int],
    out: _Capped,
) -> Step | None:
    """The export step of ``rule`` at ``values``, or None (with a diagnostic)."""
    spec = [k.format(values) for k in rule.spec]
    lacking = [s for s in spec if s not in model]
    if lacking:
        first = rule.hf[0].format({rule.stack: 0, **values} if rule.stack else values)
        message = (
            f"the rule writes '{first}' from "
            f"{', '.join(repr(s) for s in spec)}; the model lacks "
            f"{', '.join(repr(s) for s in lacking)}"
        )
        diag = _at_rule(mapping, "missing-part", message, rule)
        out.add("missing-part", diag, "incomplete rules", rule=rule)
        return None
    resolved = _resolve(mapping, rule, env, max(len(rule.hf), len(rule.spec)), out)
    if resolved is None:
        return None
    inverse = [t.inverse() for t in reversed(resolved)]
    shapes = [model[s] for s in spec]
    try:
        made = run_shapes(inverse, shapes)
    except TransformError as exc:
        message = f"'{spec[0]}': {exc.message}"
        out.add(
            "shape-mismatch",
            _at_rule(mapping, "shape-mismatch", message, rule),
            "shape mismatches",
            rule=rule,
        )
        return None
    if rule.stack is None:
        hf = [k.format(values) for k in rule.hf]
    else:  # one key per index of the stack, part after part
        count = len(made) // len(rule.hf)
        hf = [k.format({**values, rule.stack: e}) for k in rule.hf for e in range(count)]
    # An export step reads model tensors (its "hf" side) and writes checkpoint tensors.
    step = Step(rule, values, spec, hf, inverse)
    step.hf_shapes = shapes
    return step
