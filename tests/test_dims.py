"""Symbolic dimensions: canonical polynomials, exact arithmetic, floor division."""

from __future__ import annotations

from archcomp.ir.dims import Sym, add, floordiv, fmt_shape, mul, prod, sub, substitute

B, H, W = Sym.symbol("B"), Sym.symbol("H"), Sym.symbol("W")


def test_canonical_equality() -> None:
    assert mul(H, W) == mul(W, H)
    assert add(H, 1) == add(1, H)
    assert sub(add(H, 3), 3) == H
    assert sub(H, H) == 0
    assert prod([2, H, 3, W]) == mul(6, mul(H, W))
    assert add(H, 1) != add(W, 1)


def test_printing() -> None:
    assert str(mul(64, mul(H, W))) == "64*H*W"
    assert str(sub(H, 4)) == "H - 4"
    assert fmt_shape((B, 6, sub(H, 4), 5)) == "[B, 6, H - 4, 5]"


def test_floordiv_exact_and_opaque() -> None:
    assert floordiv(mul(4, H), 2) == mul(2, H)
    half = floordiv(sub(H, 1), 2)
    assert isinstance(half, Sym) and "floor" in str(half)
    assert substitute(add(half, 1), {"H": 28}) == 14
    assert floordiv(28, 2) == 14


def test_substitute_partially() -> None:
    assert substitute(mul(B, H), {"H": 3}) == mul(3, B)
    assert substitute(mul(B, H), {"H": 3, "B": 2}) == 6
