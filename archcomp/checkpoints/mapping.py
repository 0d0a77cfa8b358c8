"""Mapping files: how a family of published checkpoints becomes a spec's params and weights.

A mapping is YAML, read with the spec reader (same limits, same located errors), e.g.
``specs/hf/gpt2.yaml``::

    archcomp_mapping: 1
    spec: gpt2                                  # a shipped spec, or a path relative to this file
    checkpoint: {model_type: gpt2, architecture: GPT2LMHeadModel}
    params: {N: n_layer, d_model: n_embd}       # spec param: config.json field or ${...} of fields
    config: {activation_function: {one_of: [gelu_new, gelu_pytorch_tanh]}}
    defaults: {n_inner: null}                   # transformers' values of fields a config may omit
    tensors:                                    # checkpoint key pattern: model key pattern
      transformer.h.{i}.attn.c_attn.weight:
        {to: "h_.{i}.attn.{q,k,v}_proj.weight", transforms: [transpose, split]}
      transformer.h.{i}.attn.bias: drop         # a buffer the spec rebuilds
      lm_head.weight: {tie: transformer.wte.weight}

``config`` lists the fields whose value the spec fixes (checked when converting, written when
exporting); their values may be the spec's ``${...}`` expressions over its params. The rules of
``tensors`` are in :mod:`archcomp.checkpoints.patterns`, the transforms in
:mod:`archcomp.checkpoints.transforms`. :func:`load_mapping` returns a checked
:class:`Mapping`, or raises :class:`~archcomp.base.errors.SpecError` with every problem located.
How a mapping is applied to one checkpoint's config is :mod:`archcomp.checkpoints.config`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import Field, StringConstraints, ValidationError

from archcomp.base import gcpause
from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.base.errors import Diagnostic, Reporter, SpecError
from archcomp.checkpoints import patterns, transforms
from archcomp.checkpoints.patterns import Key, PatternError
from archcomp.checkpoints.transforms import TransformError, TransformSpec
from archcomp.frontend.expr import is_expression, type_name
from archcomp.frontend.loader import pydantic_diagnostics
from archcomp.frontend.schema import Expr, Identifier, _Strict
from archcomp.frontend.source import read_spec_file

FORMAT_VERSION = 1
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+)){0,4}\Z")
VERSION_KEY = "archcomp_mapping"
FieldName = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+)){0,4}$",
        max_length=200,
    ),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=500)]


class CheckpointDecl(_Strict):
    """Which checkpoints the mapping reads: config.json's ``model_type`` and ``architectures``."""

    model_type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    architecture: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    prefix: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="the key prefix a base-model checkpoint lacks (transformers' "
        "base_model_prefix and a dot, e.g. 'transformer.'): added when no key has it",
    )


class RuleDecl(_Strict):
    """The long form of a rule: ``{to: PATTERN, transforms: [...]}``, ``{drop: REASON}`` or
    ``{tie: CHECKPOINT_KEY}``."""

    to: Text | None = None
    transforms: list[Any] = Field(default_factory=list, max_length=16)
    drop: bool | Text | None = None
    tie: Text | None = None
    when: bool | Expr | None = Field(
        default=None,
        description="whether the rule applies: a ${...} of the spec's params "
        "(when: ${not tie_word_embeddings}); true when not written",
    )


class _Short(NamedTuple):
    """A rule's short form (``MODEL_KEY`` or ``drop``) with :class:`RuleDecl`'s fields: a
    tuple, not a second pydantic validation per rule of a 100,000-rule mapping."""

    to: str | None = None
    transforms: tuple[Any, ...] = ()
    drop: bool | None = None
    tie: str | None = None
    when: bool | str | None = None


class TensorSize(_Strict):
    """A param read from a checkpoint tensor's shape: ``{tensor: classifier.weight, dim: 0}``
    (for sizes config.json does not write, such as a classifier's label count)."""

    tensor: Text
    dim: int = 0


class Cases(_Strict):
    """A default that differs for an absent field and a null one (transformers' Mistral: no
    ``sliding_window`` is 4096, ``sliding_window: null`` is no window)."""

    if_absent: Any = None
    if_null: Any = None


class OneOf(_Strict):
    """Several allowed values of a config field; ``export`` writes the first."""

    one_of: list[Any] = Field(min_length=1, max_length=64)


class MappingFile(_Strict):
    """A mapping file, as written."""

    archcomp_mapping: Literal[1] = Field(description="format version of the mapping")
    description: str | None = None
    spec: Text
    checkpoint: CheckpointDecl
    params: dict[Identifier, Union[Text, TensorSize]] = Field(default_factory=dict)
    config: dict[FieldName, Union[OneOf, Any]] = Field(default_factory=dict)
    defaults: dict[FieldName, Union[Cases, Any]] = Field(default_factory=dict)
    free: list[Identifier] = Field(
        default_factory=list,
        description="spec params no checkpoint fixes (an input size of a convolutional net): "
        "convert keeps the spec's value, export takes any",
    )
    export: dict[FieldName, Any] = Field(
        default_factory=dict,
        description="config fields export writes that convert does not read (transformers "
        "derives them, e.g. num_labels); values may be ${...} of the spec's params",
    )
    tensors: dict[Text, Union[Text, RuleDecl]] = Field(min_length=1)


@dataclass(frozen=True)
class Rule:
    """One expanded rule: checkpoint keys -> model keys through transforms.

    ``kind`` is ``copy`` (one -> one), ``split`` (one -> the alternatives), ``concat`` (the
    alternatives -> one), ``drop`` (a checkpoint tensor with no counterpart) or ``tie`` (a
    checkpoint tensor that must equal ``tie_to``). With ``stack`` the checkpoint keys also run
    over every index of that placeholder, which the model keys lack."""

    kind: Literal["copy", "split", "concat", "drop", "tie"]
    hf: tuple[Key, ...]
    spec: tuple[Key, ...]
    transforms: tuple[TransformSpec, ...]
    path: YamlPath
    tie_to: Key | None = None
    reason: str | None = None
    when: bool | str | None = None  # applies when true (``${...}`` of the spec's params)
    stack: str | None = None  # the checkpoint-side placeholder a ``stack`` transform gathers

    @property
    def spec_templates(self) -> tuple[str, ...]:
        """The model keys as ``str.format_map`` templates (``h_.{i}.ln_1.weight``), made once
        per rule rather than once per binding."""
        found = self.__dict__.get("_templates")
        if found is None:  # a cache in the instance, as Key's
            found = self.__dict__["_templates"] = tuple([str(k) for k in self.spec])
        return found


@dataclass(frozen=True)
class Requirement:
    """A config field the spec fixes: its allowed values (``${...}`` over the spec's params)."""

    name: str
    values: tuple[Any, ...]
    path: YamlPath


@dataclass
class Mapping:
    """A checked mapping file."""

    file: str
    path: Path | None
    doc: SourceDoc
    spec: str
    model_type: str
    architecture: str
    prefix: str | None
    params: dict[str, str | TensorSize]
    config: dict[str, Requirement]
    defaults: dict[str, Any]
    rules: list[Rule] = field(default_factory=list)
    export: dict[str, Any] = field(default_factory=dict)
    free: tuple[str, ...] = ()

    def diag(self, code: str, message: str, path: YamlPath, **kw: Any) -> Diagnostic:
        return self.doc.diag(code, message, path, **kw)


def load_mapping(path: Path, display: str | None = None) -> Mapping:
    """Read and check a mapping file; every problem is a located diagnostic."""
    with gcpause.paused():  # a mapping of 100,000 rules: objects all live until it returns
        raw, doc = read_spec_file(path, display)
        doc.path = path.resolve()
        return parse_mapping(raw, doc)


def parse_mapping(raw: Any, doc: SourceDoc) -> Mapping:
    """Check a mapping file's YAML value (read from ``doc``) and expand its rules."""
    decl = _validate(raw, doc)
    rep = Reporter()
    _check_params(decl, doc, rep)
    config = {
        name: Requirement(
            name,
            tuple(value.one_of) if isinstance(value, OneOf) else (value,),
            ("config", name),
        )
        for name, value in decl.config.items()
    }
    rules = _expand_rules(decl, doc, rep)
    rep.raise_if_failed()
    ck = decl.checkpoint
    return Mapping(
        doc.file,
        doc.path,
        doc,
        decl.spec,
        ck.model_type,
        ck.architecture,
        ck.prefix,
        dict(decl.params),
        config,
        dict(decl.defaults),
        rules,
        dict(decl.export),
        tuple(decl.free),
    )


def _validate(raw: Any, doc: SourceDoc) -> MappingFile:
    """The file's schema: a mapping with the version key, then :class:`MappingFile`."""
    if not isinstance(raw, dict):
        raise SpecError(
            [doc.diag("not-a-mapping", f"a mapping file is a YAML mapping, found {type_name(raw)}")]
        )
    if VERSION_KEY not in raw:
        hint = (
            "this is a spec (it starts with 'archcomp: 1'); pass the mapping with --mapping "
            "and the spec with --spec"
            if "archcomp" in raw
            else f"start the mapping with '{VERSION_KEY}: {FORMAT_VERSION}'"
        )
        message = f"missing the format version key '{VERSION_KEY}'"
        raise SpecError([doc.diag("missing-version", message, (), hint=hint)])
    try:
        return MappingFile.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(pydantic_diagnostics(exc, doc, (), MappingFile, raw)) from None


def _check_params(decl: MappingFile, doc: SourceDoc, rep: Reporter) -> None:
    for name, text in decl.params.items():
        if isinstance(text, str) and not is_expression(text) and not _FIELD.match(text):
            message = (
                f"param '{name}' reads '{text}': write a config.json field name or a "
                "${...} expression of fields"
            )
            rep.add(doc.diag("invalid-value", message, ("params", name)))
    for i, name in enumerate(decl.free):
        if name in decl.params:
            message = f"param '{name}' is both read from the checkpoint and free"
            rep.add(doc.diag("invalid-value", message, ("free", i)))


def _expand_rules(decl: MappingFile, doc: SourceDoc, rep: Reporter) -> list[Rule]:
    """Every ``tensors:`` entry's rules; a checkpoint key with two rules is an error."""
    plain = _plain_copies(decl.tensors)
    if not any(r is None for r in plain):  # all plain copies: their keys are distinct
        return plain  # type: ignore[return-value]
    rules: list[Rule] = []
    seen: dict[str, YamlPath] = {}
    for (key, value), copy in zip(decl.tensors.items(), plain, strict=True):
        if copy is not None:  # most rules: one key, whose text is ``key``
            prev = seen.setdefault(key, copy.path)
            if prev is not copy.path:
                rep.add(_duplicate(doc, key, copy.path, prev))
            rules.append(copy)
            continue
        for rule in _rules(key, value, doc, rep):
            for k in rule.hf:
                prev = seen.setdefault(str(k), rule.path)  # str(k): cached
                if prev != rule.path:
                    rep.add(_duplicate(doc, str(k), rule.path, prev))
            rules.append(rule)
    return rules


def _duplicate(doc: SourceDoc, key: str, path: YamlPath, prev: YamlPath) -> Diagnostic:
    return doc.diag(
        "duplicate-rule",
        f"checkpoint key '{key}' has two rules",
        path,
        key=True,
        related=(doc.loc(prev, key=True),),
    )


def _pattern(text: str, doc: SourceDoc, path: YamlPath, key: bool, rep: Reporter) -> Any:
    try:
        return patterns.parse(text)
    except PatternError as exc:
        loc = doc.loc(path, key=key)
        line = doc.line_text(loc.line) or ""
        col = loc.col + (exc.offset if line[loc.col - 1 :].startswith(text) else 0)
        rep.add(
            doc.error_at("invalid-pattern", f"key pattern '{text}': {exc.message}", loc.line, col)
        )
        return None


def _plain_copies(tensors: dict[str, Any]) -> list[Rule | None]:
    """For each entry, the rule of ``KEY: MODEL_KEY`` with no alternatives and the same
    placeholders on both sides (most rules), or None: anything else, a mistake included,
    takes :func:`_rules`. Both sides' keys are made in bulk (:func:`patterns.plain_keys`)."""
    keys = list(tensors)
    values = [v if type(v) is str and v != "drop" else "" for v in tensors.values()]
    new, out = object.__new__, list[Rule | None]()
    append = out.append
    srcs, dsts = patterns.plain_keys(keys), patterns.plain_keys(values)
    for key, src, dst in zip(keys, srcs, dsts, strict=True):
        if src is None or dst is None:
            append(None)
            continue
        names, other = src.parts[1::2], dst.parts[1::2]  # Key.names, without the call
        if names != other and set(names) != set(other):
            append(None)
            continue
        # Rule("copy", (src,), (dst,), (), ("tensors", key)), without the frozen dataclass's
        # __init__ (an object.__setattr__ per field) for the 100,000 rules a mapping may hold
        rule = new(Rule)
        rule.__dict__.update(_PLAIN_COPY, hf=(src,), spec=(dst,), path=("tensors", key))
        append(rule)
    return out


_PLAIN_COPY = {
    "kind": "copy",
    "transforms": (),
    "tie_to": None,
    "reason": None,
    "when": None,
    "stack": None,
}


def _rules(key: str, value: Any, doc: SourceDoc, rep: Reporter) -> list[Rule]:
    """The rules one ``tensors:`` entry stands for (one per pairing of its alternatives), for
    an entry :func:`_plain_copies` does not read."""
    path: YamlPath = ("tensors", key)
    src = _pattern(key, doc, path, True, rep)
    decl: RuleDecl | _Short = value
    if isinstance(value, str):  # the short form, checked already as MappingFile's Text
        decl = _Short(drop=True) if value == "drop" else _Short(to=value)
    if not _one_kind(decl, path, doc, rep) or src is None:
        return []
    if decl.drop not in (None, False):
        reason = decl.drop if isinstance(decl.drop, str) else None
        return [
            Rule("drop", (k,), (), (), path, reason=reason, when=decl.when)
            for k in src.expansions()
        ]
    other_text = decl.to if decl.to is not None else decl.tie
    assert other_text is not None
    opath: YamlPath = path
    if not isinstance(value, str):
        opath = (*path, "to" if decl.to is not None else "tie")
    dst = _pattern(other_text, doc, opath, False, rep)
    specs = _transforms(decl, path, doc, rep)
    if dst is None or specs is None:
        return []
    stacked = next((str(t.args["over"]) for t in specs if t.name == "stack"), None)
    if not _same_placeholders(src, dst, stacked, (path, opath), doc, rep):
        return []
    names = [s.name for s in specs]
    if decl.tie is None and ("split" in names or "concat" in names):
        kind: Literal["split", "concat"] = "split" if "split" in names else "concat"
        made = _split_or_concat(kind, src, dst, specs, (path, opath), doc, rep)
    else:
        made = _paired(src, dst, decl.tie is not None, specs, (path, opath), doc, rep)
    if stacked is not None:
        made = [replace(r, stack=stacked) for r in made]
    return made if decl.when is None else [replace(r, when=decl.when) for r in made]


def _same_placeholders(
    src: patterns.Pattern,
    dst: patterns.Pattern,
    stacked: str | None,
    paths: tuple[YamlPath, YamlPath],
    doc: SourceDoc,
    rep: Reporter,
) -> bool:
    """Both sides use the same placeholders, but the one a ``stack`` gathers: the checkpoint
    key's only."""
    path, opath = paths
    if stacked is not None and (stacked not in src.names or stacked in dst.names):
        rep.add(
            doc.diag(
                "invalid-transform",
                f"stack over '{{{stacked}}}': the checkpoint key has that placeholder and the "
                "model key does not",
                path,
                key=True,
                hint="model.layers.{i}.experts.{e}.w2.weight: "
                "{to: layers.{i}.experts.down_proj, transforms: [{stack: e}]}",
            )
        )
        return False
    if src.names - {stacked} != dst.names:
        only = sorted((src.names - {stacked}) ^ dst.names)
        rep.add(
            doc.diag(
                "invalid-pattern",
                f"placeholder {', '.join('{' + n + '}' for n in only)} appears on one side of "
                "the rule only",
                opath,
                hint="both sides of a rule use the same placeholders",
            )
        )
        return False
    return True


def _one_kind(decl: RuleDecl | _Short, path: YamlPath, doc: SourceDoc, rep: Reporter) -> bool:
    """Exactly one of to, drop and tie, and transforms only on a ``to`` rule."""
    given = [k for k in ("to", "drop", "tie") if getattr(decl, k) not in (None, False)]
    if len(given) != 1:
        rep.add(
            doc.diag(
                "invalid-rule",
                "a rule has exactly one of 'to', 'drop' and 'tie'"
                + (f"; found {', '.join(given)}" if given else ""),
                path,
                hint="{to: MODEL_KEY, transforms: [...]}, drop, or {tie: CHECKPOINT_KEY}",
            )
        )
        return False
    if decl.transforms and decl.to is None:
        rep.add(doc.diag("invalid-rule", "only a 'to' rule has transforms", (*path, "transforms")))
        return False
    return True


def _transforms(
    decl: RuleDecl | _Short, path: YamlPath, doc: SourceDoc, rep: Reporter
) -> list[TransformSpec] | None:
    """A rule's transforms, parsed, with split last and concat first (at most one of them)."""
    specs = []
    for j, t in enumerate(decl.transforms):
        try:
            specs.append(transforms.parse(t))
        except TransformError as exc:
            where = (*path, "transforms", j, *exc.where)
            rep.add(doc.diag("invalid-transform", exc.message, where, hint=exc.hint))
    if len(specs) != len(decl.transforms):
        return None
    names = [s.name for s in specs]
    tpath: YamlPath = (*path, "transforms")
    problem: tuple[str, YamlPath] | None = None
    late_stack = [j for j, n in enumerate(names) if n == "stack" and j > 0]
    if late_stack:
        problem = (
            "stack is the first transform (it takes every index's tensor), and comes once",
            (*tpath, late_stack[0]),
        )
    elif names.count("split") > 1 or names.count("concat") > 1:
        problem = ("a rule splits or concatenates once", tpath)
    elif "split" in names and "concat" in names:
        problem = ("a rule cannot both split and concat", tpath)
    elif "split" in names and names[-1] != "split":
        problem = (
            "split is the last transform (it makes several tensors)",
            (*tpath, names.index("split")),
        )
    elif "concat" in names and names[1 if names[0] == "stack" else 0] != "concat":
        problem = (
            "concat is the first transform, or the second after stack (it takes several tensors)",
            (*tpath, names.index("concat")),
        )
    if problem is not None:
        rep.add(doc.diag("invalid-transform", *problem))
        return None
    return specs


def _split_or_concat(
    kind: Literal["split", "concat"],
    src: patterns.Pattern,
    dst: patterns.Pattern,
    specs: list[TransformSpec],
    paths: tuple[YamlPath, YamlPath],
    doc: SourceDoc,
    rep: Reporter,
) -> list[Rule]:
    """A split (one checkpoint key -> the alternatives) or concat (the reverse)."""
    path, opath = paths
    one, many = (src, dst) if kind == "split" else (dst, src)
    if one.groups or len(many.groups) != 1:
        side = "model" if kind == "split" else "checkpoint"
        rep.add(
            doc.diag(
                "invalid-pattern",
                f"a {kind} names its parts with one set of alternatives on the {side} side "
                f"(h_.{{i}}.attn.{{q,k,v}}_proj.weight), and none on the other",
                opath if kind == "split" else path,
                key=kind == "concat",
            )
        )
        return []
    if kind == "split":
        return [Rule("split", (src.expansions()[0],), tuple(dst.expansions()), tuple(specs), path)]
    return [Rule("concat", tuple(src.expansions()), (dst.expansions()[0],), tuple(specs), path)]


def _paired(
    src: patterns.Pattern,
    dst: patterns.Pattern,
    tie: bool,
    specs: list[TransformSpec],
    paths: tuple[YamlPath, YamlPath],
    doc: SourceDoc,
    rep: Reporter,
) -> list[Rule]:
    """Copies (or ties), one per pairing of the alternatives on the two sides."""
    path, opath = paths
    gs, gd = src.groups, dst.groups
    if [len(g) for g in gs] != [len(g) for g in gd]:
        rep.add(
            doc.diag(
                "invalid-pattern",
                f"the alternatives do not pair up: {_groups(gs)} in the checkpoint key, "
                f"{_groups(gd)} in '{dst.text}'",
                opath,
                hint="write the same number of alternatives, in the same order, on both sides; "
                "to split one tensor into several, add the split transform",
            )
        )
        return []
    out = []
    for choice in itertools.product(*(range(len(g)) for g in gs)):
        hk, dk = src.expand(choice), dst.expand(choice)
        if tie:
            out.append(Rule("tie", (hk,), (), (), path, tie_to=dk))
        else:
            out.append(Rule("copy", (hk,), (dk,), tuple(specs), path))
    return out


def _groups(groups: list[tuple[str, ...]]) -> str:
    return " ".join("{" + ",".join(g) + "}" for g in groups) or "none"
