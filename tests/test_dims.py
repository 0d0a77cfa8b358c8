"""Symbolic dimensions: canonical polynomials, exact arithmetic, floor division."""

from __future__ import annotations

import pytest

from archcomp.ir.dims import (
    MAX_DEGREE,
    MAX_NAME,
    MAX_TERMS,
    Dim,
    DimTooLarge,
    Sym,
    add,
    check_dim,
    floordiv,
    fmt_dim,
    fmt_shape,
    lower_bound,
    minimum,
    mul,
    prod,
    sub,
    substitute,
    total,
)

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


# -- limits --------------------------------------------------------------------------------


def _sum(prefix: str, n: int) -> Dim:
    out: Dim = 0
    for i in range(n):
        out = add(out, Sym.symbol(f"{prefix}{i}"))
    return out


def test_a_product_past_the_pair_limit_is_refused_before_it_is_formed() -> None:
    big = mul(mul(_sum("a", 10), _sum("b", 10)), _sum("c", 10))  # 1,000 terms: formed
    assert isinstance(big, Sym) and len(big.terms) == 1000
    with pytest.raises(DimTooLarge, match="65,536 pairs"):
        mul(mul(big, _sum("d", 10)), _sum("e", 10))


def test_check_dim_bounds_terms_degree_names_and_coefficients() -> None:
    check_dim(_sum("a", MAX_TERMS))
    with pytest.raises(DimTooLarge, match="terms"):
        check_dim(_sum("a", MAX_TERMS + 1))
    with pytest.raises(DimTooLarge, match="product of 17 symbols"):
        check_dim(prod([Sym.symbol(f"s{i}") for i in range(MAX_DEGREE + 1)]))
    with pytest.raises(DimTooLarge, match="coefficient past int64"):
        check_dim(sub(Sym.symbol("B"), 10**26))
    with pytest.raises(DimTooLarge, match="name"):
        check_dim(Sym.symbol("x" * (MAX_NAME + 1)))


def test_nested_floor_divisions_stop_at_the_name_limit() -> None:
    d: Dim = Sym.symbol("H")
    with pytest.raises(DimTooLarge, match="floor divisions nest too deeply"):
        for _ in range(200):
            d = add(floordiv(sub(d, 1), 2), 1)
    assert len(str(d)) <= MAX_NAME + 10


def test_lower_bound() -> None:
    """Each symbol is at least 1 (or its declared least value); a negative term is unknown."""
    assert lower_bound(add(mul(2, H), 3), {}) == 5
    assert lower_bound(mul(H, W), {"H": 4, "W": 2}) == 8
    assert lower_bound(sub(H, 2), {"H": 8}) == 6
    assert lower_bound(sub(mul(H, W), H), {}) is None  # H*W - H: a negative term
    assert lower_bound(floordiv(add(H, 1), 2), {"H": 7}) == 4
    assert lower_bound(minimum(H, 5, {}), {"H": 3}) == 3


def test_minimum_decided_by_the_least_value() -> None:
    """min(d, k) is k when d >= k is known, else a readable symbol that sizes substitute."""
    assert minimum(7, 3, {}) == 3 and minimum(2, 3, {}) == 2
    assert minimum(H, 1, {}) == 1
    assert minimum(H, 2, {"H": 2}) == 2
    assert minimum(add(H, 4), 5, {}) == 5  # H + 4 >= 5
    low = minimum(H, 2, {})
    assert str(low) == "min(H, 2)" and fmt_dim(low) == "min(H, 2)"
    assert substitute(add(H, sub(low, 2)), {"H": 1}) == 0
    assert substitute(add(H, sub(low, 2)), {"H": 9}) == 9


def test_total_is_add_one_by_one() -> None:
    """total() (the summary's MAC sum) normalises once what add() gives term by term."""
    import random

    rng = random.Random(1)
    for _ in range(200):
        dims: list[Dim] = [
            rng.randint(-3, 5)
            if rng.random() < 0.3
            else mul(rng.choice((B, H, W)), mul(rng.choice((B, H, W)), rng.randint(-2, 4)))
            for _ in range(rng.randint(0, 8))
        ]
        one_by_one: Dim = 0
        for d in dims:
            one_by_one = add(one_by_one, d)
        got = total(dims)
        assert got == one_by_one and type(got) is type(one_by_one)
        assert str(got) == str(one_by_one)
    assert total([0, add(B, 1), sub(1, B)]) == 2 and total([]) == 0
