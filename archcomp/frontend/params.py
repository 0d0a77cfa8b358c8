"""Param resolution: declared defaults, overrides, derived expressions, type checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.base.errors import Diagnostic, did_you_mean, listing
from archcomp.frontend.expr import ExprError, check_size, found, show, substitute
from archcomp.frontend.schema import RESERVED, ParamDecl, ParamValue

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "list": (list,),
}


def type_of(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list"}.get(
        type(value), "?"
    )


def fits(value: Any, ptype: str) -> bool:
    if isinstance(value, bool) and ptype != "bool":
        return False
    return isinstance(value, _PY_TYPES[ptype])


def decl_of(value: ParamValue) -> ParamDecl:
    return value if isinstance(value, ParamDecl) else ParamDecl(default=value)


class ParamProblem(Exception):
    """A param that cannot be resolved; ``path`` is relative to the param's declaration."""

    def __init__(self, message: str, hint: str | None = None, override: bool = False):
        super().__init__(message)
        self.message, self.hint, self.override = message, hint, override


class _DependencyFailed(Exception):
    """A param used by an expression failed; only that failure is reported."""


class _LazyParams(Mapping[str, Any]):
    """The names an expression sees: params evaluated on first use (so order does not matter)."""

    def __init__(
        self, env: dict[str, Any], decls: Mapping[str, Any], compute: Callable[[str], None]
    ):
        self._env, self._decls, self._compute = env, decls, compute

    def __contains__(self, key: object) -> bool:
        return key in self._env or key in self._decls

    def __getitem__(self, key: str) -> Any:
        if key not in self._env:
            self._compute(key)
        if key not in self._env:
            raise _DependencyFailed(key)
        return self._env[key]

    def __iter__(self) -> Iterator[str]:
        return iter([*self._decls, *self._env])

    def __len__(self) -> int:
        return len(set(self._decls) | set(self._env))


def resolve(
    decls: Mapping[str, ParamValue],
    overrides: Mapping[str, Any],
    *,
    extra: Mapping[str, Any] | None = None,
    report: Callable[[str, ParamProblem], None],
) -> dict[str, Any]:
    """Evaluate every param: an override if given, else its default (an expression may use
    other params). ``report(name, problem)`` receives each failure; failed params are left out.
    """
    env: dict[str, Any] = dict(extra or {})
    busy: list[str] = []
    failed: set[str] = set()

    lazy = _LazyParams(env, decls, lambda name: get(name))

    def get(name: str) -> None:
        if name in env or name in failed:
            return
        if name in busy:
            chain = " -> ".join([*busy[busy.index(name) :], name])
            raise ExprError(f"params depend on each other in a cycle: {chain}")
        decl = decl_of(decls[name])
        busy.append(name)
        try:
            if name in overrides:
                value = overrides[name]
                is_override = True
            else:
                if decl.default is None:
                    raise ParamProblem(
                        f"param '{name}' has no default and no value was given",
                        hint="give it a value at the call site",
                    )
                value = _deep_substitute(decl.default, lazy)
                is_override = False
            env[name] = _checked(name, decl, value, is_override, lazy)
        except _DependencyFailed:
            failed.add(name)  # the param it uses was reported already
        except ExprError as exc:
            failed.add(name)
            report(name, ParamProblem(exc.message, exc.hint))
        except ParamProblem as exc:
            failed.add(name)
            report(name, exc)
        finally:
            busy.pop()

    for name in decls:
        get(name)
    return {k: env[k] for k in decls if k in env} | {k: v for k, v in env.items() if k not in decls}


def _checked(
    name: str, decl: ParamDecl, value: Any, is_override: bool, lazy: Mapping[str, Any]
) -> Any:
    """``value`` of param ``name`` checked against its declaration (type, size, min, max,
    choices); an int where a float is declared becomes a float. Raises :class:`ParamProblem`."""
    ptype = decl.type or (
        type_of(_deep_substitute(decl.default, lazy))
        if decl.default is not None and is_override
        else type_of(value)
    )
    if ptype == "?" or not fits(value, ptype):
        raise ParamProblem(
            f"param '{name}' must be {'a bool, number, string or list' if ptype == '?' else ptype}"
            f", found {found(value)}",
            override=is_override,
        )
    check_size(value)  # a default or an override, evaluated or not
    if ptype == "float" and isinstance(value, int):
        value = float(value)
    if decl.min is not None and isinstance(value, (int, float)) and value < decl.min:
        raise ParamProblem(
            f"param '{name}' is {value}, below its minimum {decl.min}", override=is_override
        )
    if decl.max is not None and isinstance(value, (int, float)) and value > decl.max:
        raise ParamProblem(
            f"param '{name}' is {value}, above its maximum {decl.max}", override=is_override
        )
    if decl.choices is not None and value not in decl.choices:
        raise ParamProblem(
            f"param '{name}' is {show(value)}; choose one of "
            f"{listing([repr(c) for c in decl.choices])}",
            override=is_override,
        )
    return value


def _deep_substitute(value: Any, names: Mapping[str, Any]) -> Any:
    if isinstance(value, list):
        return [_deep_substitute(v, names) for v in value]
    return substitute(value, names)


def check_names(decls: Mapping[str, Any], doc: SourceDoc, base: YamlPath) -> list[Diagnostic]:
    """Reserved names cannot be params."""
    return [
        doc.diag(
            "reserved-name", f"'{n}' is a reserved name and cannot be a param", (*base, n), key=True
        )
        for n in decls
        if n in RESERVED
    ]


def unknown_override(name: str, decls: Mapping[str, Any]) -> str:
    hint = did_you_mean(name, decls)
    known = listing(list(decls)) or "none"
    return f"unknown param '{name}'" + (f" ({hint})" if hint else f" (params: {known})")
