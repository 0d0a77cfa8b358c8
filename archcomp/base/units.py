"""Numbers for people: counts in SI units (k, M, G, T), bytes in binary units (KiB ... TiB).

Tables and messages show these; ``--json`` and the Python objects keep the exact integers.
"""

from __future__ import annotations

_SI = ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k"))
_IEC = ("B", "KiB", "MiB", "GiB", "TiB")  # TiB at most: 3638.2 TiB, not 3.6 PiB


def fmt_count(n: int) -> str:
    """``67`` -> ``67``, ``61_706`` -> ``61.7k``, ``124_439_808`` -> ``124.4M``."""
    for i, (size, unit) in enumerate(_SI):
        if abs(n) >= size:
            text = f"{n / size:.1f}"
            if text in ("1000.0", "-1000.0") and i > 0:  # 999_950 rounds up: 1.0M, not 1000.0k
                return f"{n / _SI[i - 1][0]:.1f}{_SI[i - 1][1]}"
            return f"{n / size:,.0f}{unit}" if abs(n) >= 1000 * size else f"{text}{unit}"
    return str(n)


def fmt_bytes(n: int) -> str:
    """``512`` -> ``512 B``, ``497_759_232`` -> ``474.7 MiB`` (powers of 1024)."""
    value = float(n)
    for unit in _IEC:
        if abs(value) < 1024 or unit == _IEC[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
