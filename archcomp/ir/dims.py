"""Symbolic tensor dimensions.

A dimension is an ``int`` or a :class:`Sym`: a polynomial with integer coefficients over named
symbols (``B``, ``S``, ``4*H*W``). Arithmetic on concrete sizes stays exact; a floor division
that does not divide exactly becomes an opaque symbol such as ``floor((H - 1)/2)``, and a
minimum that the dim's least value does not decide one such as ``min(T, 2)`` (each symbol is
at least 1, or the least value a spec declares: :func:`lower_bound`).

Symbolic sizes are bounded, so that a small spec cannot make them explode (a product of sums
of ten symbols each has 10^k terms): one multiplication forms at most :data:`MAX_PRODUCT`
pairs of terms, a floor symbol's name is at most :data:`MAX_NAME` characters, and
:func:`check_dim` (run by the shape pass on every result) allows :data:`MAX_TERMS` terms of at
most :data:`MAX_DEGREE` symbols with int64 coefficients. Past them :class:`DimTooLarge` is
raised, which the shape pass reports at the node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Union

Monomial = tuple[str, ...]

MAX_TERMS = 128  # terms of a dim a shape rule may produce
MAX_DEGREE = 16  # symbols multiplied in one term
MAX_PRODUCT = 1 << 16  # pairs of terms one multiplication may form
MAX_NAME = 512  # characters of a floor((...)/k) symbol's name


class DimTooLarge(ValueError):
    """A symbolic size past the limits above; ``message`` says which."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


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


def total(dims: Iterable[Dim]) -> Dim:
    """The sum of ``dims``, as ``add`` one by one gives it, the polynomial normalised once."""
    t: dict[Monomial, int] = {}
    for d in dims:
        if isinstance(d, int):
            t[()] = t.get((), 0) + d
        else:
            for m, c in d.terms:
                t[m] = t.get(m, 0) + c
    return _norm(t)


def neg(a: Dim) -> Dim:
    return -a if isinstance(a, int) else _norm({m: -c for m, c in a.terms})


def sub(a: Dim, b: Dim) -> Dim:
    return add(a, neg(b))


def mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    pa, pb = _poly(a), _poly(b)
    if len(pa) * len(pb) > MAX_PRODUCT:
        raise DimTooLarge(
            f"a product of symbolic sizes with {len(pa):,} and {len(pb):,} terms "
            f"(at most {MAX_PRODUCT:,} pairs of terms)"
        )
    t: dict[Monomial, int] = {}
    for m1, c1 in pa.items():
        for m2, c2 in pb.items():
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
    if len(name) > MAX_NAME:
        raise DimTooLarge(
            f"a symbolic size of {len(name):,} characters (floor divisions nest too deeply; "
            f"at most {MAX_NAME})"
        )
    _FLOORS[name] = (a, k)
    return Sym.symbol(name)


# Opaque floor-division symbols, by name: what they divide, and by what.
_FLOORS: dict[str, tuple[Sym, int]] = {}
# Opaque minimum symbols (``min(T, 2)``, the length of ``x[:, :2]``), by name: the dim and k.
_MINS: dict[str, tuple[Sym, int]] = {}


def lower_bound(d: Dim, mins: Mapping[str, int]) -> int | None:
    """The least value ``d`` can take, each symbol at least its entry of ``mins`` (a size is
    at least 1); None when unknown (a term with a negative coefficient, as in ``T - 2``)."""
    if isinstance(d, int):
        return d
    total = 0
    for mono, coef in d.terms:
        if not mono:
            total += coef
            continue
        if coef < 0:
            return None
        term = coef
        for name in mono:
            term *= _symbol_bound(name, mins)
        total += term
    return total


def _symbol_bound(name: str, mins: Mapping[str, int]) -> int:
    """A symbol's least value: declared, derived for floor and min symbols, else 1 (a size)."""
    if name in _FLOORS:
        inner, k = _FLOORS[name]
        low = lower_bound(inner, mins)
        return max(low // k, 0) if low is not None else 0
    if name in _MINS:
        inner, k = _MINS[name]
        low = lower_bound(inner, mins)
        return min(low, k) if low is not None else 0
    return max(mins.get(name, 1), 1)


def minimum(d: Dim, k: int, mins: Mapping[str, int]) -> Dim:
    """min(d, k) for a size ``d``: ``k`` when ``d`` is known to be at least ``k`` (``mins``
    gives each symbol's least value), else the symbol ``min(d, k)``."""
    if isinstance(d, int):
        return min(d, k)
    low = lower_bound(d, mins)
    if low is not None and low >= k:
        return k
    name = f"min({d}, {k})"
    if len(name) > MAX_NAME:
        raise DimTooLarge(f"a symbolic size whose name is over {MAX_NAME} characters")
    _MINS[name] = (d, k)
    return Sym.symbol(name)


def check_dim(d: Dim) -> None:
    """Raise :class:`DimTooLarge` if ``d`` has too many terms, too high a degree or a
    coefficient past int64 (``B - 10^26`` can never be a size)."""
    if isinstance(d, int):
        return
    if len(d.terms) > MAX_TERMS:
        raise DimTooLarge(f"a symbolic size of {len(d.terms):,} terms (at most {MAX_TERMS})")
    for mono, coef in d.terms:
        if any(len(name) > MAX_NAME for name in mono):
            raise DimTooLarge(f"a symbolic size whose name is over {MAX_NAME} characters")
        if len(mono) > MAX_DEGREE:
            raise DimTooLarge(
                f"a symbolic size with a product of {len(mono)} symbols (at most {MAX_DEGREE})"
            )
        if abs(coef) > INT64_MAX:
            raise DimTooLarge("a symbolic size with a coefficient past int64")


def prod(dims: Sequence[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(out, d)
    return out


def is_concrete(d: Dim) -> bool:
    return isinstance(d, int)


def fmt_dim(d: Dim) -> str:
    s = str(d)
    return f"({s})" if isinstance(d, Sym) and " " in s and s not in _MINS else s


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
            elif s in _MINS:
                inner, k = _MINS[s]
                term = mul(term, minimum(substitute(inner, sizes), k, {}))
            else:
                term = mul(term, Sym.symbol(s))
        out = add(out, term)
    return out
