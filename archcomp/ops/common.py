"""Helpers shared by shape rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Shape, Sym, add, floordiv, fmt_shape, mul, sub
from archcomp.ops.registry import ShapeCtx, ShapeError

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
INT_DTYPES = ("int64", "int32")
ALL_DTYPES = (*FLOAT_DTYPES, *INT_DTYPES, "bool")
# an argument naming a dtype (cast, arange): the dtypes a spec input may declare
DTypeName = Literal["float32", "float16", "bfloat16", "float64", "int64", "int32", "bool"]
Number = int | float
# a constant that fills or chooses values (masked_fill, where): a number, or an infinity by name
# (YAML's .inf is refused in arguments)
FillValue = int | float | Literal["inf", "-inf"]


def need_float(t: TensorType, port: str = "x", what: str = "this op") -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ShapeError(
            f"{what} needs a floating-point input, found {t.dtype}",
            port=port,
            hint="a bool mask is used by masked_fill or where, or made float by "
            "{op: cast, dtype: float32}"
            if t.dtype == "bool"
            else "token ids go through an embedding first",
        )


def need_bool(t: TensorType, port: str, what: str) -> None:
    """A mask or condition: bool, as a comparison gives."""
    if t.dtype != "bool":
        raise ShapeError(
            f"{what} needs a bool {port}, found {t.dtype}",
            port=port,
            hint="compare to make a mask: {op: gt, scalar: 0}",
        )


def need_index(t: TensorType, port: str, what: str) -> None:
    """Indices into a dim: int64, as torch's gather, scatter and index_add require."""
    if t.dtype != "int64":
        raise ShapeError(
            f"{what} needs int64 indices in {port}, found {t.dtype}",
            port=port,
            hint="indices come from arange, argmax or topk; or {op: cast, dtype: int64}",
        )


def need_fits(value: FillValue, dtype: str, arg: str, what: str) -> None:
    """A constant that goes into a tensor of ``dtype`` without changing it: no float (or
    infinity) into an integer tensor, only 0 or 1 into a bool one (torch would truncate)."""
    if dtype in FLOAT_DTYPES:
        return
    if dtype == "bool" and not (isinstance(value, int) and value in (0, 1)):
        raise ShapeError(f"{what}: {arg} {value} is not 0 or 1, the values of a bool", arg=arg)
    if not isinstance(value, int):
        raise ShapeError(
            f"{what}: {arg} {value} is not a whole number, and the values are {dtype}",
            arg=arg,
            hint="write an int, or cast the values first: {op: cast, dtype: float32}",
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
    first = tuple(shapes[0])
    if all(tuple(s) == first for s in shapes[1:]):
        return first  # the usual case (a residual add): what the loop below gives
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


def ntuple(value: int | Sequence[int], n: int, arg: str) -> tuple[int, ...]:
    """An int or a length-n list of ints (kernel_size, stride, ...) as an n-tuple."""
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise ShapeError(
            f"{arg} has {len(value)} values, this op needs {n}",
            arg=arg,
            hint=f"give one int, or a list of {n}",
        )
    return tuple(value)


def as_torch_size(value: int | Sequence[int]) -> int | tuple[int, ...]:
    """An int, or a list as a tuple (what torch constructors print and expect)."""
    return value if isinstance(value, int) else tuple(value)


def window_out(
    size: Dim,
    kernel: int,
    stride: int,
    pad: int,
    dilation: int = 1,
    *,
    ceil_mode: bool = False,
    axis: int,
) -> Dim:
    """Output length of a sliding window (conv or pool) along one dim, as torch computes it.

    ``floor((size + 2*pad - dilation*(kernel-1) - 1) / stride) + 1`` (``ceil`` with
    ``ceil_mode``, dropping a last window that would start in the right padding). A kernel wider
    than the padded input is a ShapeError naming ``kernel_size``; ``axis`` names the dim.
    """
    extent = dilation * (kernel - 1) + 1
    padded = add(size, 2 * pad)
    if isinstance(padded, int) and padded < extent:
        wide = f" (dilated to {extent})" if dilation > 1 else ""
        raise ShapeError(
            f"kernel_size {kernel}{wide} is larger than the input along dim {axis} "
            f"(size {size}{f' + 2*{pad} padding' if pad else ''})",
            arg="kernel_size",
            hint="use a smaller kernel, more padding, or a larger input",
        )
    span = sub(padded, extent)  # positions the window can move through
    if not ceil_mode:
        return add(floordiv(span, stride), 1)
    out = add(floordiv(add(span, stride - 1), stride), 1)
    if isinstance(size, int):
        assert isinstance(out, int)
        return out - 1 if (out - 1) * stride >= size + pad else out
    if pad + stride > extent:  # the last window might start in the padding: undecidable here
        raise ShapeError(
            f"ceil_mode needs a concrete size along dim {axis}, found symbolic '{size}'",
            arg="ceil_mode",
            hint="give the input a concrete size for this dim, or drop ceil_mode",
        )
    return out


def div_exact(a: Dim, b: Dim) -> Dim | None:
    """a / b when b is a nonzero monomial (``3``, ``B``, ``2*B*S``) that divides every term of
    a exactly; None otherwise."""
    if isinstance(b, int):
        if b == 0:
            return None
        if isinstance(a, int):
            return a // b if a % b == 0 else None
        if all(c % b == 0 for _, c in a.terms):
            return floordiv(a, b)
        return None
    if len(b.terms) != 1:
        return None
    ((bmono, bcoef),) = b.terms
    if isinstance(a, int):
        return None
    out: dict[tuple[str, ...], int] = {}
    for mono, coef in a.terms:
        rest = list(mono)
        for s in bmono:
            if s not in rest:
                return None
            rest.remove(s)
        if coef % bcoef:
            return None
        out[tuple(rest)] = coef // bcoef
    quotient: Dim = 0
    for mono, coef in out.items():
        term: Dim = coef
        for s in mono:
            term = mul(term, Sym.symbol(s))
        quotient = add(quotient, term)
    return quotient


def fill_constant(value: FillValue) -> int | float:
    """The Python number a lowering passes for a FillValue (``"-inf"`` is ``float("-inf")``)."""
    return float(value) if isinstance(value, str) else value


def operands(ctx: ShapeCtx, what: str, scalar: object) -> list[TensorType]:
    """The tensors of a binary op with ports ``x`` and ``other`` (optional) and a ``scalar``
    argument that stands for ``other``: exactly one of the two."""
    x, other = ctx.get("x"), ctx.get("other")
    assert x is not None
    if other is not None and scalar is not None:
        raise ShapeError(
            f"{what} has both a second input and a scalar", arg="scalar", hint="drop one"
        )
    if other is None and scalar is None:
        raise ShapeError(
            f"{what} needs a second input or a scalar",
            port="x",
            hint=f"in: [a, b]; or one input and a constant: {{op: {what}, scalar: 0}}",
        )
    return [x] if other is None else [x, other]
