"""Restricted expressions over params: ``${4 * d_model}``, ``${d_model // h}``.

Parsed with :func:`ast.parse` and evaluated by walking a small whitelist of node kinds; Python's
``eval`` is never called. Allowed: int/float/bool/string literals, ``null`` and lists, names
(params, or a mapping's config fields, nested ones dotted: ``rope_scaling.factor``),
``+ - * / // % **``, comparisons, ``and``/``or``/``not``, ``a if c else b``, the
calls of :data:`FUNCTIONS` (``int``, ``float``, ``round``, ``min``, ``max``, ``abs``), each
with Python's result for numbers and a located error for anything else, and on lists an
element by index (``layer_types[index]``), ``+`` (joined) and ``*`` an int (repeated). No
other attributes, slices or other calls. ``null`` is an op argument left out (its default).

No expression can exhaust the machine: its text is at most :data:`MAX_LEN` characters,
integers stay within int64 and powers are bounded, and every value it makes is bounded in
size: a string at most :data:`MAX_STRING` characters, a list at most :data:`MAX_ITEMS`
elements counting nested ones and the characters of its strings (a list holding the same list
twice counts it twice, so doubling a list over 60 params stops at the limit rather than at
2^60 elements).
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
import reprlib
from collections.abc import Callable, Mapping
from typing import Any

Value = int | float | bool | str | list[Any] | None

MAX_LEN = 500
MAX_STRING = 10_000  # characters of a string value
MAX_ITEMS = 10_000  # elements of a list value, nested ones included
INT_LIMIT = 2**63 - 1
_EXPR = re.compile(r"\$\{(.*?)\}", re.S)
_WHOLE = re.compile(r"\s*\$\{(.*)\}\s*\Z", re.S)
FUNCTIONS = ("int", "float", "round", "min", "max", "abs")
CONSTANTS = {"true": True, "false": False, "True": True, "False": False, "null": None}


class ExprError(Exception):
    """An expression that cannot be evaluated; ``message`` says why."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def _num(v: Any, what: str) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ExprError(f"{what} needs numbers, found {found(v)}")
    return v


def _check(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > INT_LIMIT:
        raise ExprError("integer overflow: the result exceeds int64")
    if isinstance(v, float) and not math.isfinite(v):
        raise ExprError("the result is not a finite number")
    return check_size(v)


def check_size(v: Any) -> Any:
    """``v`` if its strings and lists are within :data:`MAX_STRING` and :data:`MAX_ITEMS`."""
    if isinstance(v, str) and len(v) > MAX_STRING:
        raise ExprError(
            f"the value would be a string of {len(v):,} characters; the limit is {MAX_STRING:,}"
        )
    if isinstance(v, list):
        _count(v, {})
    return v


def _count(v: list[Any], memo: dict[int, int]) -> int:
    """Elements of ``v``, nested ones included; each distinct list is walked once."""
    known = memo.get(id(v))
    if known is not None:
        return known
    n = len(v)
    for item in v:
        if isinstance(item, list):
            n += _count(item, memo)
        elif isinstance(item, str):
            n += len(item)  # so that the list's text is bounded too
        if n > MAX_ITEMS:
            raise ExprError(
                f"the value would be a list of more than {MAX_ITEMS:,} elements (a string in "
                "it counts its characters)"
            )
    memo[id(v)] = n
    return n


def _pow(a: Any, b: Any) -> Any:
    a, b = _num(a, "'**'"), _num(b, "'**'")
    if isinstance(b, int) and b > 64 and abs(a) > 1:
        raise ExprError("integer overflow: the result exceeds int64")
    try:
        return a**b
    except (OverflowError, ZeroDivisionError) as exc:
        raise ExprError(f"'**' failed: {exc}") from None


def _div(fn: Callable[[Any, Any], Any], sym: str) -> Callable[[Any, Any], Any]:
    def run(a: Any, b: Any) -> Any:
        a, b = _num(a, f"'{sym}'"), _num(b, f"'{sym}'")
        if b == 0:
            raise ExprError(f"division by zero in '{sym}'")
        return fn(a, b)

    return run


def _arith(fn: Callable[[Any, Any], Any], sym: str) -> Callable[[Any, Any], Any]:
    def run(a: Any, b: Any) -> Any:
        if sym == "+" and isinstance(a, str) and isinstance(b, str):
            if len(a) + len(b) > MAX_STRING:  # refused before it is built
                raise ExprError(f"the value would be a string of over {MAX_STRING:,} characters")
            return a + b
        if sym == "+" and isinstance(a, list) and isinstance(b, list):
            return _bounded(len(a) + len(b), lambda: a + b)
        if sym == "*" and isinstance(b, list):
            a, b = b, a
        if sym == "*" and isinstance(a, list):
            n = _num(b, "'*' of a list")
            if not isinstance(n, int):
                raise ExprError(f"a list repeats an int number of times, found {show(n)}")
            return _bounded(len(a) * max(n, 0), lambda: a * n)
        return fn(_num(a, f"'{sym}'"), _num(b, f"'{sym}'"))

    return run


def _bounded(n: int, make: Callable[[], list[Any]]) -> list[Any]:
    """A list of ``n`` top-level elements, refused before it is built past :data:`MAX_ITEMS`
    (``make`` builds it; nested elements are counted after)."""
    if n > MAX_ITEMS:
        raise ExprError(f"the value would be a list of more than {MAX_ITEMS:,} elements")
    return make()


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: _arith(operator.add, "+"),
    ast.Sub: _arith(operator.sub, "-"),
    ast.Mult: _arith(operator.mul, "*"),
    ast.Div: _div(operator.truediv, "/"),
    ast.FloorDiv: _div(operator.floordiv, "//"),
    ast.Mod: _div(operator.mod, "%"),
    ast.Pow: _pow,
}
_CMPOPS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxstring, _SHOW.maxother = 3, 8, 60, 60


def show(v: Any) -> str:
    """A value as a message quotes it: its repr, shortened (``[1, 2, ...]``, ``'aa...aa'``),
    and ``null`` for None."""
    return "null" if v is None else _SHOW.repr(v)


def found(v: Any) -> str:
    """A value as a message says it was found: ``int 3``, ``string 'a'``, ``null``."""
    return show(v) if v is None else f"{type_name(v)} {show(v)}"


def type_name(v: Any) -> str:
    names = {bool: "bool", int: "int", float: "float", str: "string", list: "list"}
    return "null" if v is None else names.get(type(v), type(v).__name__)


class _Evaluator:
    def __init__(self, names: Mapping[str, Any]):
        self.names = names

    def run(self, node: ast.AST) -> Any:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise ExprError(
                f"'{_describe(node)}' is not allowed in an expression",
                hint=f"allowed: arithmetic, comparisons, and/or/not, 'a if c else b', {_CALLS}",
            )
        return _check(method(node))

    def _Expression(self, node: ast.Expression) -> Any:
        return self.run(node.body)

    def _Constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, (bool, int, float, str)):
            return node.value
        raise ExprError(f"literal {node.value!r} is not allowed")

    def _List(self, node: ast.List) -> Any:
        return [self.run(e) for e in node.elts]

    _Tuple = _List

    def _Subscript(self, node: ast.Subscript) -> Any:
        """``xs[i]``: the element of a list at an int index (negative counts from the end)."""
        if isinstance(node.slice, ast.Slice):
            raise ExprError("slices are not allowed; index one element: xs[i]")
        seq, i = self.run(node.value), self.run(node.slice)
        if not isinstance(seq, list):
            raise ExprError(f"only a list has elements by index, found {type_name(seq)}")
        if isinstance(i, bool) or not isinstance(i, int):
            raise ExprError(f"a list index must be an int, found {found(i)}")
        if not -len(seq) <= i < len(seq):
            raise ExprError(f"index {i} is out of range for a list of {len(seq)} elements")
        return seq[i]

    def _Name(self, node: ast.Name) -> Any:
        if node.id in self.names:
            return self.names[node.id]
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        from archcomp.base.errors import did_you_mean

        raise ExprError(
            f"unknown name '{node.id}' (names in expressions are params)",
            hint=did_you_mean(node.id, self.names),
        )

    def _Attribute(self, node: ast.Attribute) -> Any:
        """``a.b.c``: a field nested in an object where the names are a config's, flattened
        (a mapping's ``${rope_scaling.factor}``); attribute access everywhere else."""
        dotted = _dotted(node)
        if dotted is not None and dotted in self.names:
            return self.names[dotted]
        raise ExprError(
            f"'{_describe(node)}' is not allowed in an expression",
            hint=f"allowed: arithmetic, comparisons, and/or/not, 'a if c else b', {_CALLS}",
        )

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        v = self.run(node.operand)
        if isinstance(node.op, ast.Not):
            return not _truth(v)
        v = _num(v, "unary sign")
        return -v if isinstance(node.op, ast.USub) else +v

    def _BinOp(self, node: ast.BinOp) -> Any:
        fn = _BINOPS.get(type(node.op))
        if fn is None:
            raise ExprError(f"operator '{_describe(node)}' is not allowed")
        return fn(self.run(node.left), self.run(node.right))

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        is_and = isinstance(node.op, ast.And)
        result: Any = is_and
        for e in node.values:
            result = _truth(self.run(e))
            if result != is_and:
                return result
        return result

    def _Compare(self, node: ast.Compare) -> Any:
        left = self.run(node.left)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            fn = _CMPOPS.get(type(op))
            if fn is None:
                raise ExprError("only ==, !=, <, <=, >, >= comparisons are allowed")
            right = self.run(comp)
            try:
                ok = fn(left, right)
            except TypeError:
                raise ExprError(
                    f"cannot compare {type_name(left)} with {type_name(right)}"
                ) from None
            if not ok:
                return False
            left = right
        return True

    def _IfExp(self, node: ast.IfExp) -> Any:
        return self.run(node.body) if _truth(self.run(node.test)) else self.run(node.orelse)

    def _Call(self, node: ast.Call) -> Any:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS:
            raise ExprError(
                f"call '{_describe(node.func)}(...)' is not allowed",
                hint=f"the only calls are {_CALLS}",
            )
        assert name is not None
        if node.keywords:
            raise ExprError(f"{name}() takes no keyword arguments")
        args = [_num(self.run(a), name + "()") for a in node.args]
        low, high = (2, None) if name in ("min", "max") else (1, 1)
        if len(args) < low or (high is not None and len(args) > high):
            wanted = "one argument" if high == 1 else "two or more arguments"
            raise ExprError(
                f"{name}() takes {wanted}, found {len(args)}",
                hint="round(x) rounds to an int; round(x, n) is not supported"
                if name == "round"
                else None,
            )
        return _CALL_FNS[name](args)


_CALLS = "int(x), float(x), round(x), min(a, b, ...), max(a, b, ...) and abs(x)"
# Python's own results: int() truncates toward zero, round() rounds half to even and gives an
# int; the result is then checked (an int past int64 is an overflow).
_CALL_FNS: dict[str, Callable[[list[int | float]], int | float]] = {
    "int": lambda a: int(a[0]),
    "float": lambda a: float(a[0]),
    "round": lambda a: round(a[0]),
    "min": min,
    "max": max,
    "abs": lambda a: abs(a[0]),
}


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` as the text ``"a.b.c"``; None for anything but names and attributes."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _truth(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ExprError(f"expected a bool condition, found {found(v)}")
    return v


def _describe(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - unparse of odd nodes
        return type(node).__name__


def evaluate(source: str, names: Mapping[str, Any]) -> Any:
    """Evaluate one expression (the text inside ``${...}``) against params."""
    tree = _parse(source)
    try:
        return _Evaluator(names).run(tree)
    except RecursionError:
        raise ExprError("expression is too deeply nested") from None


@functools.lru_cache(maxsize=4096)
def _parse(source: str) -> ast.Expression:
    """Parse once per distinct text: repeated blocks evaluate the same expressions N times."""
    if len(source) > MAX_LEN:
        raise ExprError(f"expression is longer than {MAX_LEN} characters")
    try:
        return ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"invalid expression: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExprError("expression is too deeply nested") from None


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def substitute(value: Any, names: Mapping[str, Any]) -> Any:
    """Evaluate a value: ``"${e}"`` gives e's typed value; ``"a${e}b"`` interpolates a string."""
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _WHOLE.match(value)
    if whole and "${" not in whole.group(1):
        return evaluate(whole.group(1), names)
    size = len(value)

    def piece(m: re.Match[str]) -> str:
        nonlocal size
        text = as_text(evaluate(m.group(1), names))
        size += len(text) - len(m.group(0))
        if size > MAX_STRING:
            raise ExprError(f"the value would be a string of over {MAX_STRING:,} characters")
        return text

    return _EXPR.sub(piece, value)


def as_text(v: Any) -> str:
    """A value as interpolated into a string: ``true``/``false`` for bools, else ``str``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return str(v)  # a bounded value: a list prints in time linear in MAX_ITEMS
