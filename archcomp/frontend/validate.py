"""Front end: a loaded document -> pydantic :class:`Spec`, and pydantic's errors as
located diagnostics (one per offending value, with what was expected, what was found and a
hint), for the spec and for an op's arguments alike."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.base.errors import Diagnostic, SpecError, did_you_mean, listing
from archcomp.frontend.expr import type_name
from archcomp.frontend.schema import Spec

_TYPE_WORDS = {
    "int_type": "an int",
    "float_type": "a float",
    "bool_type": "a bool",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "literal_error": None,
    "int_from_float": "an int",
}


def parse_document(raw: Any, doc: SourceDoc) -> Spec:
    """Validate a loaded document against the :class:`Spec` model."""
    if not isinstance(raw, dict):
        raise SpecError(
            [doc.diag("not-a-mapping", f"a spec is a mapping of keys, found {type_name(raw)}", ())]
        )
    if "archcomp" not in raw:
        raise SpecError(
            [
                doc.diag(
                    "missing-version",
                    "missing the format version key 'archcomp'",
                    (),
                    hint="start the spec with 'archcomp: 1'",
                )
            ]
        )
    if raw["archcomp"] != 1 or isinstance(raw["archcomp"], bool):
        raise SpecError(
            [
                doc.diag(
                    "unsupported-version",
                    f"format version {raw['archcomp']!r} is not supported",
                    ("archcomp",),
                    hint="this archcomp reads 'archcomp: 1'",
                )
            ]
        )
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(pydantic_diagnostics(exc, doc, (), Spec, raw)) from None


def pydantic_diagnostics(
    exc: ValidationError,
    doc: SourceDoc,
    base: YamlPath,
    model: Any,
    raw: Any,
    node: str | None = None,
    op: str | None = None,
) -> list[Diagnostic]:
    """Turn pydantic errors into located diagnostics, one per offending value."""
    out: list[Diagnostic] = []
    grouped = _by_value(exc, raw)
    unknown = [p for p, es in grouped.items() if any(e["type"] == "extra_forbidden" for e in es)]
    for path, errs in grouped.items():
        full = (*base, *path)
        kinds = {e["type"] for e in errs}
        if "extra_forbidden" in kinds:
            out.append(_unknown_key(doc, full, path, model, raw, node, op))
        elif "missing" in kinds:
            if not _misspelt(path, unknown):  # else 'kernal_size' is one error, not two
                out.append(_missing_key(doc, full, path, raw, node, op))
        else:
            key = path[-1] if path else None
            msg, hint = _invalid_value(errs, _get(raw, path))
            hint = hint or _description(model, path)
            label = f"'{key}': " if isinstance(key, str) else ""
            out.append(doc.diag("invalid-value", label + msg, full, node=node, op=op, hint=hint))
    return out


def _misspelt(missing: YamlPath, unknown: list[YamlPath]) -> bool:
    """A missing key that an unknown key beside it misspells (its "did you mean" names it)."""
    return any(
        len(u) == len(missing)
        and u[:-1] == missing[:-1]
        and did_you_mean(str(u[-1]), [str(missing[-1])]) is not None
        for u in unknown
    )


def _by_value(exc: ValidationError, raw: Any) -> dict[YamlPath, list[Any]]:
    """pydantic's errors grouped by the document path of the value they are about."""
    grouped: dict[YamlPath, list[Any]] = {}
    for err in exc.errors():
        grouped.setdefault(_real_path(raw, err), []).append(err)
    # A value that fits no member of a union errs once per member; keep the member that got
    # furthest (the deepest path) and drop the plain type mismatches of the others.
    for path in list(grouped):
        deeper = any(len(p) > len(path) and p[: len(path)] == path for p in grouped)
        if deeper and all(e["type"] in _TYPE_WORDS for e in grouped[path]):
            del grouped[path]
    return grouped


def _unknown_key(
    doc: SourceDoc,
    full: YamlPath,
    path: YamlPath,
    model: Any,
    raw: Any,
    node: str | None,
    op: str | None,
) -> Diagnostic:
    """A key (an op's argument) the model does not have, with the closest known one."""
    key = path[-1] if path else None
    where = f"for op '{op}'" if op else "here"
    noun = "argument" if op else "key"
    known = _fields_at(model, path[:-1])
    return doc.diag(
        "unknown-key",
        f"unknown {noun} '{key}' {where}",
        full,
        key=True,
        node=node,
        op=op,
        hint=_unknown_key_hint(str(key), _get(raw, path), known),
    )


def _missing_key(
    doc: SourceDoc, full: YamlPath, path: YamlPath, raw: Any, node: str | None, op: str | None
) -> Diagnostic:
    """A required key that is absent; located at a key it was glued to (``key:value``)."""
    key = path[-1] if path else None
    noun = "argument" if op else "key"
    parent = _get(raw, path[:-1])
    glued = [k for k in parent if str(k).startswith(f"{key}:")] if isinstance(parent, dict) else []
    return doc.diag(
        "missing-key",
        f"missing required {noun} '{key}'",
        (*full[:-1], glued[0]) if glued else full[:-1],
        key=True,
        node=node,
        op=op,
        hint=_unknown_key_hint(glued[0], None, []) if glued else None,
    )


def _invalid_value(errs: list[Any], value: Any) -> tuple[str, str | None]:
    """The message and hint for a value of the wrong type or form."""
    wanted = []
    for e in errs:
        word = _TYPE_WORDS.get(e["type"], "")
        if e["type"] == "literal_error":
            word = str((e.get("ctx") or {}).get("expected", ""))
        if word:
            wanted.append(word)
    if wanted and all(e["type"] in _TYPE_WORDS for e in errs):
        want = " or ".join(dict.fromkeys(wanted))
        said = "null" if value is None else f"{type_name(value)} {_show(value)}"
        msg = f"expected {want}, found {said}"
        return msg, _type_hint(value, wanted)
    e = next((e for e in errs if e["type"] not in _TYPE_WORDS), errs[0])
    return _constraint_message(e, value, wanted), None


def _constraint_message(e: Any, value: Any, wanted: list[str]) -> str:
    """The message for a value that breaks a constraint (length, pattern, ...)."""
    msg = f"{_lower(e['msg'])}, found {_show(value)}"
    if e["type"] == "too_short":
        n = (e.get("ctx") or {}).get("min_length", 1)
        noun = "entry" if n == 1 else "entries"
        msg = f"needs at least {n} {noun}, found {_show(value)}"
    pattern = str((e.get("ctx") or {}).get("pattern", ""))
    if e["type"] == "string_pattern_mismatch" and pattern.startswith(("^[A-Za-z_]", "^([A-Za-z_]")):
        msg = (
            f"expected a name (letters, digits, _; not starting with a digit), found {_show(value)}"
        )
        if "|[0-9]+)" in pattern:  # a node id: a number too (an nn.Sequential's children)
            msg = f"expected a name or a number (letters, digits, _), found {_show(value)}"
        if "\\." in pattern:
            msg = f"expected a reference like 'node' or 'node.result', found {_show(value)}"
    elif e["type"] == "string_pattern_mismatch" and "\\$" in pattern:
        want = " or ".join(dict.fromkeys(w for w in wanted)) or "a value"
        msg = f"expected {want} or a ${{...}} expression, found {_show(value)}"
    return msg


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Known keys of the mapping at loc (for 'did you mean'), walking the model annotations."""
    tp = _model_at(model, loc)
    return [f.alias or n for n, f in tp.model_fields.items()] if tp is not None else []


def _description(model: Any, loc: tuple[Any, ...]) -> str | None:
    """What the field at ``loc`` takes, in its schema's words (the hint of a wrong value)."""
    if not loc or not isinstance(loc[-1], str):
        return None
    tp = _model_at(model, loc[:-1])
    f = _field(tp, loc[-1]) if tp is not None else None
    return f.description if f is not None else None


def _model_at(model: Any, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model of the mapping at ``loc``, walking the annotations; None if none."""
    tp: Any = model
    for step in loc:
        tp = _strip(tp)
        if _is_model(tp):
            f = _field(tp, step)
            tp = f.annotation if f is not None else None
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    tp = _strip(tp)
    return tp if _is_model(tp) else None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field(model: type[BaseModel], key: Any) -> Any:
    """The field a document key names (its alias or its name), or None."""
    return next((f for n, f in model.model_fields.items() if (f.alias or n) == key), None)


def _strip(tp: Any) -> Any:
    """The model (or container) inside Optional/Union/Annotated wrappers."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is typing.Union:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            conts = [a for a in args if typing.get_origin(a) in (list, dict)]
            tp = models[0] if models else (conts[0] if conts else args[0])
        else:
            return tp


def _real_path(raw: Any, err: Any) -> YamlPath:
    """The error's location as a path in the document, without pydantic's union-member tags."""
    steps: list[Any] = []
    cur = raw
    loc = err["loc"]
    for i, item in enumerate(loc):
        in_map = isinstance(cur, dict) and item in cur
        in_list = isinstance(cur, list) and isinstance(item, int) and 0 <= item < len(cur)
        if in_map or in_list:
            steps.append(item)
            cur = cur[item]
        elif i == len(loc) - 1 and err["type"] == "missing" and isinstance(cur, dict):
            steps.append(item)
        # else: a union member's tag ("InputDecl", "list[...]"): not part of the document
    return tuple(steps)


def _unknown_key_hint(key: str, value: Any, known: list[str]) -> str | None:
    name, colon, rest = key.partition(":")
    if colon and rest and not rest.startswith(" "):
        return f"put a space after the colon: '{name}: {rest}'"
    if value is None and ("," in key or " " in key.strip()):
        return "inside {...} an unquoted comma ends a value; quote the value that holds it"
    return did_you_mean(key, known) or (f"known: {listing(known)}" if known else None)


def _lower(msg: str) -> str:
    return msg[:1].lower() + msg[1:]


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _type_hint(v: Any, wanted: list[str]) -> str | None:
    """A hint for a value of the wrong type, given the type words that were ``wanted``."""
    if isinstance(v, str) and v.strip().lstrip("-").isdigit() and v.isascii():  # not '٣'
        return "quoted numbers are strings; remove the quotes"
    number = "an int" in wanted or "a float" in wanted
    if type(v) is int and v >= 0 and "a string" in wanted and not number:
        return f"a name that is a number (a node id such as an nn.Sequential's) is quoted: '{v}'"
    if isinstance(v, str) and v.lower() in ("yes", "no", "on", "off", "y", "n"):
        return "YAML 1.2 reads this as a string; write true or false"
    if isinstance(v, bool) and "a mapping" in wanted:
        return "this takes a mapping of settings: {} for their defaults"
    if isinstance(v, bool) and ("an int" in wanted or "a float" in wanted):
        return "a bool is not a number here"
    return None


def _get(raw: Any, path: tuple[Any, ...] | list[Any]) -> Any:
    """The value at ``path`` in ``raw``, or None where there is none."""
    cur = raw
    for p in path:
        try:
            cur = cur[p]
        except (KeyError, IndexError, TypeError):
            return None
    return cur
