"""Symbolic tensor dimensions.

A dimension is an ``int`` or a :class:`Sym`: a polynomial with integer coefficients over named
symbols (``B``, ``S``, ``4*H*W``). Arithmetic on concrete sizes stays exact; a floor division
that does not divide exactly becomes an opaque symbol such as ``floor((H - 1)/2)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

Monomial = tuple[str, ...]


class Sym:
    """An immutable polynomial over symbol names, kept in canonical form."""

    __slots__ = ("_hash", "terms")

    def __init__(self, terms: dict[Monomial, int]):
        self.terms: tuple[tuple[Monomial, int], ...] = tuple(
            sorted((m, c) for m, c in terms.items() if c != 0)
        )
        self._hash = hash(self.terms)

    @staticmethod
    def symbol(name: str) -> Sym:
        return Sym({(name,): 1})

    def _as_dict(self) -> dict[Monomial, int]:
        return dict(self.terms)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sym) and self.terms == other.terms

    def __repr__(self) -> str:
        return f"Sym({self})"

    def __str__(self) -> str:
        out = ""
        for i, (mono, coef) in enumerate(sorted(self.terms, key=lambda t: (-len(t[0]), t[0]))):
            mag = abs(coef)
            body = "*".join(mono)
            text = str(mag) if not mono else (body if mag == 1 else f"{mag}*{body}")
            if i == 0:
                out = ("-" if coef < 0 else "") + text
            else:
                out += (" - " if coef < 0 else " + ") + text
        return out or "0"

    @property
    def symbols(self) -> set[str]:
        return {s for mono, _ in self.terms for s in mono}


Dim = Union[int, Sym]
Shape = tuple[Dim, ...]

INT64_MAX = 2**63 - 1  # the largest size or element count a torch tensor can have


def _poly(d: Dim) -> dict[Monomial, int]:
    return {(): d} if isinstance(d, int) else d._as_dict()


def _norm(terms: dict[Monomial, int]) -> Dim:
    terms = {m: c for m, c in terms.items() if c != 0}
    if not terms:
        return 0
    if set(terms) == {()}:
        return terms[()]
    return Sym(terms)


def add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    t = _poly(a)
    for m, c in _poly(b).items():
        t[m] = t.get(m, 0) + c
    return _norm(t)


def neg(a: Dim) -> Dim:
    return -a if isinstance(a, int) else _norm({m: -c for m, c in a.terms})


def sub(a: Dim, b: Dim) -> Dim:
    return add(a, neg(b))


def mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    t: dict[Monomial, int] = {}
    for m1, c1 in _poly(a).items():
        for m2, c2 in _poly(b).items():
            m = tuple(sorted(m1 + m2))
            t[m] = t.get(m, 0) + c1 * c2
    return _norm(t)


def floordiv(a: Dim, k: int) -> Dim:
    """a // k for a positive int k; exact when every coefficient divides."""
    if isinstance(a, int):
        return a // k
    if k == 1:
        return a
    if all(c % k == 0 for _, c in a.terms):
        return _norm({m: c // k for m, c in a.terms})
    name = f"floor(({a})/{k})"
    _FLOORS[name] = (a, k)
    return Sym.symbol(name)


# Opaque floor-division symbols, by name: what they divide, and by what.
_FLOORS: dict[str, tuple[Sym, int]] = {}


def prod(dims: Sequence[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(out, d)
    return out


def is_concrete(d: Dim) -> bool:
    return isinstance(d, int)


def fmt_dim(d: Dim) -> str:
    s = str(d)
    return f"({s})" if isinstance(d, Sym) and (" " in s) else s


def fmt_shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def to_json(d: Dim) -> int | str:
    return d if isinstance(d, int) else str(d)


def substitute(d: Dim, sizes: dict[str, int]) -> Dim:
    """Replace symbols by concrete sizes where known (floor symbols are re-derived)."""
    if isinstance(d, int):
        return d
    out: Dim = 0
    for mono, coef in d.terms:
        term: Dim = coef
        for s in mono:
            if s in sizes:
                term = mul(term, sizes[s])
            elif s in _FLOORS:
                inner, k = _FLOORS[s]
                term = mul(term, floordiv(substitute(inner, sizes), k))
            else:
                term = mul(term, Sym.symbol(s))
        out = add(out, term)
    return out
