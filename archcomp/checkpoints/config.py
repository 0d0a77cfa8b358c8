"""Config evaluation: config.json's fields -> a spec's params, and the spec's params -> the
fields it fixes (what a :class:`~archcomp.checkpoints.mapping.Mapping`'s ``params``,
``config`` and ``defaults`` say, applied to one checkpoint's config)."""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from dataclasses import replace
from typing import Any

from archcomp.base.documents import YamlPath
from archcomp.base.errors import did_you_mean
from archcomp.checkpoints.mapping import Cases, Mapping, Requirement, TensorSize
from archcomp.frontend.expr import ExprError, is_expression, show, substitute

MAX_FIELD_DEPTH = 4
MAX_FIELDS = 100_000


class ConfigProblem(Exception):
    """A config value a mapping cannot use: the field and why."""

    def __init__(self, field: str | None, message: str, path: YamlPath, hint: str | None = None):
        super().__init__(message)
        self.field = field
        self.message = message
        self.path = path
        self.hint = hint


def flatten(config: MappingABC[str, Any]) -> dict[str, Any]:
    """config.json's fields, with those inside objects and lists also under dotted names
    (``rope_parameters.rope_theta``, ``depths.0``), as a mapping names them (at most
    :data:`MAX_FIELD_DEPTH` levels and :data:`MAX_FIELDS` names)."""
    out = dict(config)
    todo = [(k, v) for k, v in config.items() if isinstance(v, (dict, list))]
    while todo and len(out) < MAX_FIELDS:
        prefix, obj = todo.pop()
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for k, v in items:
            name = f"{prefix}.{k}"
            out.setdefault(name, v)
            if isinstance(v, (dict, list)) and name.count(".") < MAX_FIELD_DEPTH:
                todo.append((name, v))
    return out


def nest(flat: MappingABC[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten` for writing config.json: dotted names as nested objects
    (one it makes whose names are 0, 1, ... n-1 as a list); a later whole value replaces them."""
    out: dict[str, Any] = {}
    made: set[int] = set()
    for name, value in flat.items():
        *parents, last = name.split(".")
        obj = out
        for p in parents:
            if not isinstance(obj.get(p), dict) or id(obj[p]) not in made:
                obj[p] = {}
                made.add(id(obj[p]))
            obj = obj[p]
        obj[last] = value

    def lists(obj: Any) -> Any:
        if not isinstance(obj, dict) or id(obj) not in made:
            return obj
        new = {k: lists(v) for k, v in obj.items()}
        if sorted(new) == sorted(str(i) for i in range(len(new))):
            return [new[str(i)] for i in range(len(new))]
        return new

    return {k: lists(v) for k, v in out.items()}


def evaluate(value: Any, env: MappingABC[str, Any]) -> Any:
    """A config value with its ``${...}`` evaluated, inside lists too (``hidden_sizes:
    ["${width}", "${2 * width}"]``)."""
    if isinstance(value, list):
        return [evaluate(v, env) for v in value]
    return substitute(value, env)


def with_defaults(mapping: Mapping, config: MappingABC[str, Any]) -> dict[str, Any]:
    """config.json's fields (flattened), with the mapping's ``defaults`` for those it omits or
    sets to null (transformers' null means its default; ``{if_absent: A, if_null: N}`` where
    the two differ). Defaults apply in order, so one may name a field an earlier one filled."""
    out = flatten(config)
    for name, value in mapping.defaults.items():
        if isinstance(value, Cases):
            if name not in out:
                value = value.if_absent
            elif out[name] is None:
                value = value.if_null
            else:
                continue
        elif out.get(name) is not None:
            continue
        try:
            out[name] = substitute(value, _scalars(out))
        except ExprError as exc:
            raise ConfigProblem(None, exc.message, ("defaults", name), exc.hint) from None
    return out


def spec_params(
    mapping: Mapping,
    config: MappingABC[str, Any],
    shapes: MappingABC[str, tuple[int, ...]] | None = None,
) -> dict[str, Any]:
    """The spec's params from config.json (after :func:`with_defaults`) and, for params read
    from a tensor's size, the checkpoint's tensor ``shapes``."""
    names = _scalars(config)
    out: dict[str, Any] = {}
    for param, text in mapping.params.items():
        path: YamlPath = ("params", param)
        if isinstance(text, TensorSize):
            shape = (shapes or {}).get(text.tensor)
            if shape is None:
                raise ConfigProblem(
                    None,
                    f"param '{param}' is the size of checkpoint tensor '{text.tensor}', which "
                    "the checkpoint lacks",
                    (*path, "tensor"),
                    did_you_mean(text.tensor, shapes or {}),
                )
            if not -len(shape) <= text.dim < len(shape):
                raise ConfigProblem(
                    None,
                    f"param '{param}': checkpoint tensor '{text.tensor}' has shape {list(shape)}, "
                    f"no dim {text.dim}",
                    (*path, "dim"),
                )
            out[param] = shape[text.dim]
            continue
        if is_expression(text):
            try:
                out[param] = substitute(text, names)
            except ExprError as exc:
                raise ConfigProblem(
                    None, f"param '{param}': {exc.message}", path, exc.hint
                ) from None
            continue
        if text not in config:
            raise ConfigProblem(
                text,
                f"config.json has no field '{text}' (for param '{param}')",
                path,
                did_you_mean(text, config)
                or "add it to the mapping's defaults if transformers fills it in",
            )
        out[param] = config[text]
    return out


def _scalars(config: MappingABC[str, Any]) -> dict[str, Any]:
    """The fields an expression may name: scalars and lists of scalars (not null)."""
    return {
        k: v
        for k, v in config.items()
        if isinstance(v, (bool, int, float, str))
        or (isinstance(v, list) and all(isinstance(x, (bool, int, float, str)) for x in v))
    }


def allowed(req: Requirement, env: MappingABC[str, Any]) -> list[Any]:
    """A requirement's allowed values, its expressions evaluated against the spec's params."""
    out = []
    for i, v in enumerate(req.values):
        try:
            out.append(evaluate(v, env))
        except ExprError as exc:
            path = req.path if len(req.values) == 1 else (*req.path, "one_of", i)
            raise ConfigProblem(req.name, exc.message, path, exc.hint) from None
    return out


def same_value(a: Any, b: Any) -> bool:
    """Equality of config values where true is not 1 and 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) or isinstance(b, dict):
        return a == b
    return bool(a == b) and (a is None) == (b is None)


def applied(mapping: Mapping, env: MappingABC[str, Any]) -> Mapping:
    """``mapping`` with the rules whose ``when`` holds for the spec's params ``env`` (a rule
    without one always holds). A ``when`` that fails or is not a bool is a
    :class:`ConfigProblem` at the rule's ``when``."""
    if all(r.when is None for r in mapping.rules):
        return mapping
    holds: dict[YamlPath, bool] = {}
    for rule in mapping.rules:
        if rule.when is None or rule.path in holds:
            continue
        at: YamlPath = (*rule.path, "when")
        try:
            value = substitute(rule.when, env)
        except ExprError as exc:
            raise ConfigProblem(None, f"rule 'when': {exc.message}", at, exc.hint) from None
        if not isinstance(value, bool):
            message = f"a rule's 'when' must be a bool, found {show(value)}"
            raise ConfigProblem(None, message, at, "write a bool param or a comparison")
        holds[rule.path] = value
    rules = [r for r in mapping.rules if r.when is None or holds[r.path]]
    return replace(mapping, rules=rules)
