"""Helpers shared by shape rules."""

from __future__ import annotations

from collections.abc import Sequence

from archcomp.dims import Dim, Shape, fmt_shape
from archcomp.ir import TensorType
from archcomp.ops.registry import ShapeError

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
INT_DTYPES = ("int64", "int32")


def need_float(t: TensorType, port: str = "x", what: str = "this op") -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ShapeError(
            f"{what} needs a floating-point input, found {t.dtype}",
            port=port,
            hint="token ids go through an embedding first",
        )


def need_int(t: TensorType, port: str = "x", what: str = "this op") -> None:
    if t.dtype not in INT_DTYPES:
        raise ShapeError(
            f"{what} needs integer ids (int64), found {t.dtype}",
            port=port,
            hint="declare the input with dtype: int64",
        )


def norm_axis(axis: int, rank: int, arg: str = "dim") -> int:
    """A possibly negative axis as a non-negative index, or a ShapeError."""
    if not -rank <= axis < rank:
        raise ShapeError(f"{arg}={axis} is out of range for a rank-{rank} tensor", arg=arg)
    return axis % rank


def broadcast(shapes: Sequence[Shape], ports: Sequence[str]) -> Shape:
    """NumPy broadcasting of symbolic shapes: equal dims, or 1."""
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dim: Dim = 1
        for s, port in zip(shapes, ports, strict=True):
            j = i - (rank - len(s))
            if j < 0:
                continue
            d = s[j]
            if d == 1:
                continue
            if dim == 1:
                dim = d
            elif d != dim:
                listed = " and ".join(fmt_shape(x) for x in shapes)
                raise ShapeError(
                    f"shapes {listed} do not match at dim {i - rank} ({dim} vs {d})", port=port
                )
        out.append(dim)
    return tuple(out)


def common_dtype(types: Sequence[TensorType], port: str) -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise ShapeError(f"inputs have different dtypes: {', '.join(sorted(dtypes))}", port=port)
    return types[0].dtype
