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

import re
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from difflib import get_close_matches

from archcomp.base.errors import Diagnostic, Reporter, did_you_mean
from archcomp.checkpoints.mapping import Mapping, Rule
from archcomp.checkpoints.patterns import Key
from archcomp.checkpoints.transforms import Transform, TransformError

Shape = tuple[int, ...]
MAX_SHOWN = 10  # diagnostics of one kind shown before "and N more"
_INDEX = re.compile(r"(?<=\.)[0-9]+(?=\.|$)")


@dataclass
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
    rule repeats in every layer), and at most :data:`MAX_SHOWN` of each kind."""

    def __init__(self) -> None:
        self.diags: list[Diagnostic] = []
        self.more: list[int] = []
        self.groups: dict[tuple[str, object], int] = {}
        self.counts: dict[str, int] = {}
        self.labels: dict[str, str] = {}

    def add(
        self, kind: str, diag: Diagnostic, label: str, rule: Rule | None = None, key: str = ""
    ) -> None:
        """Add ``diag``; one per ``rule``, or per ``key`` with its indices generalized
        (``h.0.ln_1.bias`` and ``h.1.ln_1.bias`` are one problem, in two layers)."""
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
            self.diags.append(diag)
            self.more.append(0)

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


def _unused_hint(name: str, unused: Sequence[str]) -> str | None:
    close = get_close_matches(name, unused, n=1, cutoff=0.6)
    return f"is a rule for the unused checkpoint tensor '{close[0]}' missing?" if close else None


def _match(rules: Sequence[Rule], side: str, key: str) -> list[tuple[Rule, int, dict[str, int]]]:
    out = []
    for rule in rules:
        keys: tuple[Key, ...] = rule.hf if side == "hf" else rule.spec
        for j, k in enumerate(keys):
            values = k.match(key)
            if values is not None:
                out.append((rule, j, values))
    return out


def _resolve(
    mapping: Mapping,
    rule: Rule,
    env: MappingABC[str, object],
    parts: int,
    out: _Capped,
) -> list[Transform] | None:
    resolved = []
    for j, spec in enumerate(rule.transforms):
        try:
            resolved.append(spec.resolve(env, parts))
        except TransformError as exc:
            path = (*rule.path, "transforms", j, *exc.where)
            out.add(
                "invalid-transform",
                mapping.diag("invalid-transform", exc.message, path, hint=exc.hint),
                "transform problems",
                rule=rule,
            )
            return None
    return resolved


def run_shapes(transforms: Sequence[Transform], shapes: Sequence[Shape]) -> list[Shape]:
    out = list(shapes)
    for t in transforms:
        out = t.shapes(out)
    return out


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
    file in messages. Raises :class:`SpecError` with every problem."""
    out = _Capped()
    rules = mapping.rules
    groups: dict[tuple[int, tuple[tuple[str, int], ...]], dict[int, str]] = {}
    unused: list[str] = []
    dropped: list[str] = []
    ties: list[tuple[str, str, Rule]] = []
    for key in checkpoint:
        found = _match(rules, "hf", key)
        if not found:
            unused.append(key)
            continue
        if len({id(r) for r, _, _ in found}) > 1:
            a, b = found[0][0], found[1][0]
            out.add(
                "ambiguous-rule",
                mapping.diag(
                    "ambiguous-rule",
                    f"checkpoint tensor '{key}' matches two rules",
                    a.path,
                    key=True,
                    related=(mapping.doc.loc(b.path, key=True),),
                ),
                "ambiguous matches",
            )
            continue
        rule, j, values = found[0]
        if rule.kind == "drop":
            dropped.append(key)
        elif rule.kind == "tie":
            assert rule.tie_to is not None
            ties.append((key, rule.tie_to.format(values), rule))
        else:
            gid = (id(rule), tuple(sorted(values.items())))
            groups.setdefault(gid, {})[j] = key
    by_id = {id(r): r for r in rules}
    produced: dict[str, tuple[Step, int]] = {}
    steps: list[Step] = []
    strays: list[tuple[str, Step]] = []  # model keys a rule makes that the model lacks
    for rid, vals in groups:
        rule = by_id[rid]
        values = dict(vals)
        hf = [k.format(values) for k in rule.hf]
        missing = [h for h in hf if h not in checkpoint]
        if missing:
            out.add(
                "missing-part",
                mapping.diag(
                    "missing-part",
                    f"the concat of {', '.join(repr(h) for h in hf)} lacks "
                    f"{', '.join(repr(m) for m in missing)} in {weights}",
                    rule.path,
                    key=True,
                ),
                "incomplete concats",
                rule=rule,
            )
            continue
        step = Step(rule, values, hf, [k.format(values) for k in rule.spec], [])
        steps.append(step)
        for i, name in enumerate(step.spec):
            if name in aliases:
                out.add(
                    "tied-target",
                    mapping.diag(
                        "tied-target",
                        f"checkpoint tensor '{hf[0]}' fills model tensor '{name}', which the "
                        f"spec ties to '{aliases[name]}'",
                        rule.path,
                        key=True,
                        hint=f"fill '{aliases[name]}', and check this tensor with "
                        f"'{hf[0]}: {{tie: <the checkpoint key of {aliases[name]}>}}'",
                    ),
                    "tied targets",
                    rule=rule,
                )
            elif name not in model:
                strays.append((name, step))
            elif name in produced:
                other = produced[name][0]
                out.add(
                    "filled-twice",
                    mapping.diag(
                        "filled-twice",
                        f"model tensor '{name}' is filled twice: from '{other.hf[0]}' and "
                        f"from '{hf[0]}'",
                        rule.path,
                        key=True,
                        related=(mapping.doc.loc(other.rule.path, key=True),),
                    ),
                    "tensors filled twice",
                    rule=rule,
                )
            else:
                produced[name] = (step, i)
    unfilled = [k for k in model if k not in produced]
    for name, step in strays:
        out.add(
            "unknown-model-key",
            mapping.diag(
                "unknown-model-key",
                f"checkpoint tensor '{step.hf[0]}' maps to '{name}', which the model does not have",
                step.rule.path,
                key=True,
                hint=did_you_mean(name, unfilled),
            ),
            "keys the model does not have",
            rule=step.rule,
        )
    wanted: dict[str, str] = {}  # checkpoint key a rule needs -> the model key it fills
    for name in unfilled:
        found = [(r, j, v) for r, j, v in _match(rules, "spec", name) if r.kind != "tie"]
        if not found:
            strays_left = [n for n, _ in strays]
            out.add(
                "unfilled",
                Diagnostic(
                    "unfilled",
                    f"model tensor '{name}' is filled by no rule of {mapping.file}",
                    hint=did_you_mean(name, strays_left) or _unused_hint(name, unused),
                ),
                "model tensors no rule fills",
                key=name,
            )
            continue
        rule, _, values = found[0]
        needs = [k.format(values) for k in rule.hf]
        lacking = [h for h in needs if h not in checkpoint]
        for h in lacking:
            wanted[h] = name
    for h, name in wanted.items():
        rule = _match(rules, "hf", h)[0][0]
        out.add(
            "missing-tensor",
            mapping.diag(
                "missing-tensor",
                f"model tensor '{name}' needs checkpoint tensor '{h}', which {weights} lacks",
                rule.path,
                key=True,
                hint=did_you_mean(h, unused),
            ),
            "checkpoint tensors missing",
            rule=rule,
        )
    for key in unused:
        hint = did_you_mean(key, wanted)
        spec_rule = _match(rules, "spec", key)
        if hint is None and key in aliases:
            hint = f"the spec ties '{key}' to '{aliases[key]}': add a tie rule for it"
        elif hint is None and spec_rule:
            hint = "a rule writes this as a model key; the checkpoint side of a rule is its key"
        out.add(
            "unused-tensor",
            Diagnostic(
                "unused-tensor",
                f"{weights}: tensor '{key}' is used by no rule of {mapping.file}",
                hint=hint or "every checkpoint tensor is mapped, tied or dropped by a rule",
            ),
            "checkpoint tensors no rule uses",
            key=key,
        )
    for key, target, rule in ties:
        if target not in checkpoint:
            out.add(
                "missing-tensor",
                mapping.diag(
                    "missing-tensor",
                    f"checkpoint tensor '{key}' is tied to '{target}', which {weights} lacks",
                    rule.path,
                    key=True,
                    hint=did_you_mean(target, checkpoint),
                ),
                "checkpoint tensors missing",
                rule=rule,
            )
        elif checkpoint[target] != checkpoint[key]:
            out.add(
                "tie-broken",
                mapping.diag(
                    "tie-broken",
                    f"checkpoint tensor '{key}' {list(checkpoint[key])} is tied to '{target}' "
                    f"{list(checkpoint[target])}: the shapes differ",
                    rule.path,
                    key=True,
                ),
                "ties that do not hold",
                rule=rule,
            )
    for step in steps:
        count = max(len(step.hf), len(step.spec))
        resolved = _resolve(mapping, step.rule, env, count, out)
        if resolved is None:
            continue
        step.transforms = resolved
        step.hf_shapes = [checkpoint[h] for h in step.hf]
        _check_shapes(mapping, step, step.hf_shapes, [model.get(s) for s in step.spec], out)
    out.raise_if_failed()
    return Plan(steps, ties, dropped)


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
        out.add(
            "shape-mismatch",
            mapping.diag(
                "shape-mismatch",
                f"'{step.hf[0]}': {exc.message}",
                step.rule.path,
                key=True,
                hint=exc.hint,
            ),
            "shape mismatches",
            rule=step.rule,
        )
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
            out.add(
                "shape-mismatch",
                mapping.diag(
                    "shape-mismatch",
                    f"checkpoint tensor '{step.hf[0]}' {made_text}, "
                    f"but model tensor '{name}' is {list(w)}",
                    step.rule.path,
                    key=True,
                    hint=hint,
                ),
                "shape mismatches",
                rule=step.rule,
            )


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
    groups: dict[tuple[int, tuple[tuple[str, int], ...]], dict[int, str]] = {}
    for name in model:
        found = _match(rules, "spec", name)
        if not found:
            out.add(
                "unfilled",
                Diagnostic(
                    "unfilled",
                    f"model tensor '{name}' is written by no rule of {mapping.file}",
                ),
                "model tensors no rule writes",
                key=name,
            )
            continue
        rule, j, values = found[0]
        gid = (id(rule), tuple(sorted(values.items())))
        groups.setdefault(gid, {})[j] = name
    by_id = {id(r): r for r in rules}
    steps: list[Step] = []
    written: dict[str, Step] = {}
    for (rid, vals), _parts in groups.items():
        rule = by_id[rid]
        values = dict(vals)
        spec = [k.format(values) for k in rule.spec]
        lacking = [s for s in spec if s not in model]
        if lacking:
            out.add(
                "missing-part",
                mapping.diag(
                    "missing-part",
                    f"the rule writes '{rule.hf[0].format(values)}' from "
                    f"{', '.join(repr(s) for s in spec)}; the model lacks "
                    f"{', '.join(repr(s) for s in lacking)}",
                    rule.path,
                    key=True,
                ),
                "incomplete rules",
                rule=rule,
            )
            continue
        parts = max(len(rule.hf), len(rule.spec))
        resolved = _resolve(mapping, rule, env, parts, out)
        if resolved is None:
            continue
        inverse = [t.inverse() for t in reversed(resolved)]
        # An export step reads model tensors (its "hf" side) and writes checkpoint tensors.
        step = Step(rule, values, spec, [k.format(values) for k in rule.hf], inverse)
        step.hf_shapes = [model[s] for s in spec]
        try:
            run_shapes(inverse, step.hf_shapes)
        except TransformError as exc:
            out.add(
                "shape-mismatch",
                mapping.diag("shape-mismatch", f"'{spec[0]}': {exc.message}", rule.path, key=True),
                "shape mismatches",
                rule=rule,
            )
            continue
        for h in step.spec:
            if h in written:
                out.add(
                    "filled-twice",
                    mapping.diag(
                        "filled-twice",
                        f"checkpoint key '{h}' is written twice",
                        rule.path,
                        key=True,
                    ),
                    "keys written twice",
                    rule=rule,
                )
            written[h] = step
        steps.append(step)
    out.raise_if_failed()
    return steps
