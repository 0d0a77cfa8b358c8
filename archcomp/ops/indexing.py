"""The index mini-language of the ``index`` op: ``"[:, -1, 1:5:2]"``, ``[":", -1]`` or ``-1``
read without ``eval``, and the shape such an index selects from a tensor.

No op is registered here: :mod:`archcomp.ops.shape` declares ``index`` with these rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import EllipsisType
from typing import Union

from archcomp.ir import TensorType
from archcomp.ir.dims import INT64_MAX, Dim, add, floordiv, fmt_shape, minimum, sub
from archcomp.ir.opdef import ShapeError

IndexItem = Union[int, slice, EllipsisType, None]

_INT = re.compile(r"^[+-]?[0-9]+$")


def _int(text: str, whole: str) -> int:
    if not _INT.match(text):
        raise ShapeError(
            f"'{text}' in index '{whole}' is not an int",
            arg="at",
            hint="write ints, slices like 1:3 or ::2, '...' or None",
        )
    if len(text.lstrip("+-")) > 19 or abs(int(text)) > INT64_MAX:
        raise ShapeError(f"'{text}' in index '{whole}' is past int64", arg="at")
    return int(text)


def _item(text: str, whole: str) -> IndexItem:
    t = text.strip()
    if t == "...":
        return ...
    if t == "None":
        return None
    if ":" not in t:
        return _int(t, whole)
    parts = t.split(":")
    if len(parts) > 3:
        raise ShapeError(f"'{t}' in index '{whole}' has too many ':'", arg="at")
    bounds = [_int(p.strip(), whole) if p.strip() else None for p in parts]
    start, stop, step = (*bounds, None) if len(bounds) == 2 else bounds
    if step is not None and step <= 0:
        raise ShapeError(f"slice step must be positive, found {step}", arg="at")
    return slice(start, stop, step)


def parse_index(at: str | int | Sequence[int | str | None]) -> tuple[IndexItem, ...]:
    """The items of an index written as ``"[:, -1]"``, ``[":", -1]`` or ``-1`` (no eval)."""
    if isinstance(at, int):
        return (at,)
    if isinstance(at, str):
        body = at.strip()
        if body.startswith("[") != body.endswith("]"):
            raise ShapeError(f"unbalanced brackets in index '{at}'", arg="at")
        if body.startswith("["):
            body = body[1:-1]
        texts = body.split(",")
        if len(texts) > 1 and not texts[-1].strip():
            texts.pop()  # a trailing comma, as in "[0,]"
        if not body.strip() or any(not s.strip() for s in texts):
            raise ShapeError(f"empty item in index '{at}'", arg="at")
        items = [_item(s, at) for s in texts]
    else:
        whole = str(list(at))
        items = []
        for v in at:
            if isinstance(v, str) and "," in v:
                raise ShapeError(f"'{v}': one index item per list entry", arg="at")
            items.append(_item(v, whole) if isinstance(v, str) else v)
        if not items:
            raise ShapeError("the index is empty", arg="at")
    if sum(1 for i in items if i is ...) > 1:
        raise ShapeError("an index can have only one '...'", arg="at")
    return tuple(items)


def _slice_len(s: slice, d: Dim, axis: int, mins: Mapping[str, int]) -> Dim:
    step = s.step or 1
    if isinstance(d, int):
        n = len(range(*s.indices(d)))
        if n == 0:
            raise ShapeError(f"slice {_fmt_slice(s)} of dim {axis} (size {d}) is empty", arg="at")
        return n
    # symbolic: exact when the length does not depend on the dim's size (x[:, 1:], x[:, :-1]),
    # or when the dim's least value (``mins``) decides it (x[:, :2] of T >= 2 is 2 long);
    # otherwise x[:, :16] is min(T, 16) long
    if s.start is not None and s.stop is not None and s.start < 0 <= s.stop:
        raise ShapeError(
            f"slice {_fmt_slice(s)} of dim {axis} needs a concrete size, found symbolic '{d}'",
            arg="at",
            hint="count both bounds from the same end",
        )
    same_end = s.start is not None and s.stop is not None and (s.start < 0) == (s.stop < 0)
    if same_end and s.stop <= s.start:
        raise ShapeError(f"slice {_fmt_slice(s)} of dim {axis} is empty", arg="at")
    start: Dim = 0 if s.start is None else s.start
    if s.stop is not None and s.stop >= 0:  # x[a:b]: min(d, b) - a
        length = sub(minimum(d, s.stop, mins), start)
    elif s.start is not None and s.start < 0:  # x[-a:] or x[-a:-b]: min(d, a) - b
        length = sub(minimum(d, -s.start, mins), -(s.stop or 0))
    else:  # x[a:] or x[a:-b]: d - b - a
        length = sub(add(d, s.stop or 0), start)
    if isinstance(length, int) and length <= 0:
        raise ShapeError(f"slice {_fmt_slice(s)} of dim {axis} is empty", arg="at")
    return length if step == 1 else floordiv(add(length, step - 1), step)


def _fmt_slice(s: slice) -> str:
    def f(v: int | None) -> str:
        return "" if v is None else str(v)

    return f"{f(s.start)}:{f(s.stop)}" + (f":{s.step}" if s.step is not None else "")


def indexed_shape(
    x: TensorType,
    at: str | int | Sequence[int | str | None],
    mins: Mapping[str, int] | None = None,
) -> tuple[Dim, ...]:
    """The shape of ``x[at]``: each int drops a dim, each slice keeps one (sized by
    :func:`_slice_len`; ``mins`` are the symbols' least values), each ``None`` adds a dim of
    size 1; ``...`` stands for the dims the index leaves out."""
    items = list(parse_index(at))
    used = sum(1 for i in items if i is not None and i is not ...)
    if used > x.rank:
        raise ShapeError(
            f"index has {used} entries for a rank-{x.rank} input {fmt_shape(x.shape)}", arg="at"
        )
    fill: list[IndexItem] = [slice(None)] * (x.rank - used)
    if ... in items:
        k = items.index(...)
        items[k : k + 1] = fill
    else:
        items += fill
    out: list[Dim] = []
    axis = 0
    for item in items:
        if item is None:
            out.append(1)
            continue
        d = x.shape[axis]
        if isinstance(item, slice):
            out.append(_slice_len(item, d, axis, mins or {}))
        elif isinstance(item, int) and isinstance(d, int) and not -d <= item < d:
            raise ShapeError(
                f"index {item} is out of range for dim {axis} (size {d})",
                arg="at",
                hint=f"valid: {-d}..{d - 1}",
            )
        axis += 1
    return tuple(out)


def short_key(at: str | int | Sequence[int | str | None]) -> IndexItem | tuple[IndexItem, ...]:
    """The key ``x[key]`` indexes with, without what does nothing, so that generated code stays
    short: a trailing '...', and trailing ':' unless a '...' before them counts dims from the
    end. An empty tuple where nothing is left (the index selects all of ``x``)."""
    items = list(parse_index(at))
    while items and (items[-1] is ... or (items[-1] == slice(None) and ... not in items)):
        items.pop()
    return items[0] if len(items) == 1 else tuple(items)
