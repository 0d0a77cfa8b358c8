"""Shape ops: flatten, identity, reshape, expand, transpose, permute, index, concat, split,
matmul, scale.

None has parameters; each lowers to a torch function, an operator or a tensor method.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Sym, add, fmt_shape, mul, prod
from archcomp.ops.common import broadcast, common_dtype, div_exact, need_float, norm_axis
from archcomp.ops.indexing import indexed_shape, short_key
from archcomp.ops.indexing import parse_index as parse_index
from archcomp.ops.registry import (
    LowerCtx,
    NoArgs,
    OpArgs,
    OpDef,
    Port,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)

# --- flatten -------------------------------------------------------------------------------


class FlattenArgs(OpArgs):
    """Merge dims ``start_dim..end_dim`` (inclusive) into one, like ``nn.Flatten``."""

    start_dim: int = Field(default=1, description="first dim to merge")
    end_dim: int = Field(default=-1, description="last dim to merge (inclusive)")


def _flatten_shape(ctx: ShapeCtx) -> TensorType:
    x, a = ctx.x, ctx.args
    start = norm_axis(a.start_dim, x.rank, "start_dim")
    end = norm_axis(a.end_dim, x.rank, "end_dim")
    if start > end:
        raise ShapeError(
            f"end_dim={a.end_dim} comes before start_dim={a.start_dim} in a rank-{x.rank} tensor",
            arg="end_dim",
        )
    merged = prod(x.shape[start : end + 1])
    return TensorType((*x.shape[:start], merged, *x.shape[end + 1 :]), x.dtype)


def _flatten_lower(c: LowerCtx) -> Any:
    import torch

    a = c.args
    if a.end_dim == -1:
        return c.call(torch.flatten, c.x, a.start_dim)
    return c.call(torch.flatten, c.x, a.start_dim, a.end_dim)


register(
    OpDef(
        "flatten",
        FlattenArgs,
        _flatten_shape,
        Style("shape", "Flatten", plumbing=True),
        lower=_flatten_lower,
        doc="Flatten dims start_dim..end_dim into one (default: all but the batch dim).",
    )
)

# --- identity ------------------------------------------------------------------------------


register(
    OpDef(
        "identity",
        NoArgs,
        lambda ctx: ctx.x,
        Style("shape", "Identity"),
        lower=lambda c: c.x,  # no code: readers use the input itself
        doc="The input, unchanged (a placeholder; it adds nothing to the compiled forward).",
    )
)

# --- reshape -------------------------------------------------------------------------------


class ReshapeArgs(OpArgs):
    """The new shape: positive ints, at most one -1 (inferred), or names of symbolic dims of
    the input such as ``B`` (kept as they are)."""

    shape: list[int | str] = Field(
        min_length=1,
        description="sizes: ints, one -1 (inferred), or names of the input's symbolic dims ('B')",
    )


def _sym_dim(x: TensorType, name: str) -> int | None:
    """The index of the input dim that is exactly the symbol ``name``."""
    target = Sym.symbol(name)
    return next((i for i, d in enumerate(x.shape) if d == target), None)


def _reshape_shape(ctx: ShapeCtx) -> TensorType:
    x, spec = ctx.x, ctx.args.shape
    out: list[Dim | None] = []
    for v in spec:
        if isinstance(v, str):
            if _sym_dim(x, v) is None:
                syms = [str(d) for d in x.shape if isinstance(d, Sym) and len(d.symbols) == 1]
                raise ShapeError(
                    f"'{v}' is not a dim of the input {fmt_shape(x.shape)}",
                    arg="shape",
                    hint="a name must be one of the input's symbolic dims"
                    + (f" ({', '.join(syms)})" if syms else "")
                    + "; use -1 for one unknown size",
                )
            out.append(Sym.symbol(v))
        elif v == -1:
            out.append(None)
        elif v <= 0:
            raise ShapeError(f"shape has size {v}; sizes are positive, or -1", arg="shape")
        else:
            out.append(v)
    if out.count(None) > 1:
        raise ShapeError("shape has more than one -1", arg="shape", hint="name the others")
    total = prod(x.shape)
    known = prod([d for d in out if d is not None])
    shown = "[" + ", ".join(str(v) for v in spec) + "]"
    if None in out:
        rest = div_exact(total, known)
        if rest is None:
            raise ShapeError(
                f"cannot reshape {fmt_shape(x.shape)} to {shown}: its {total} elements "
                f"are not a multiple of {known}",
                arg="shape",
            )
        out[out.index(None)] = rest
    elif total != known:
        raise ShapeError(
            f"cannot reshape {fmt_shape(x.shape)} ({total} elements) to {shown} ({known} elements)",
            arg="shape",
        )
    return TensorType(tuple(d for d in out if d is not None), x.dtype)


def _reshape_lower(c: LowerCtx) -> Any:
    spec: list[int | str] = list(c.args.shape)
    named = [i for i, v in enumerate(spec) if isinstance(v, str)]
    if named and -1 not in spec:
        spec[named.pop()] = -1  # torch infers it: fewer size() calls
    x_type = c.in_types["x"]
    sizes: list[Any] = []
    for v in spec:
        if isinstance(v, str):
            sizes.append(c.method("size", c.x, _sym_dim(x_type, v)))  # a runtime size
        else:
            sizes.append(v)
    return c.method("reshape", c.x, *sizes)


register(
    OpDef(
        "reshape",
        ReshapeArgs,
        _reshape_shape,
        Style("shape", "Reshape", plumbing=True),
        lower=_reshape_lower,
        doc="Reshape to a new shape with the same number of elements.",
    )
)

# --- expand --------------------------------------------------------------------------------


class ExpandArgs(OpArgs):
    """Broadcast size-1 dims to a larger size without copying, like ``Tensor.expand``: -1
    keeps a dim, an int sets it, a name such as ``B`` takes that symbolic dim's size from the
    ``like`` input at run time. Extra leading entries add dims: a [1, d] tensor expanded with
    ``[B, -1, -1]`` becomes [B, 1, d]."""

    shape: list[int | str] = Field(
        min_length=1,
        max_length=8,
        description="sizes: -1 (keep), positive ints, or names of like's symbolic dims ('B')",
    )


def _expand_shape(ctx: ShapeCtx) -> TensorType:
    x, spec, like = ctx.x, ctx.args.shape, ctx.get("like")
    if len(spec) < x.rank:
        raise ShapeError(
            f"shape has {len(spec)} entries for a rank-{x.rank} input {fmt_shape(x.shape)}",
            arg="shape",
            hint="give one entry per dim (-1 keeps a dim)",
        )
    new = len(spec) - x.rank  # leading dims expand adds
    out: list[Dim] = []
    for i, v in enumerate(spec):
        have: Dim | None = x.shape[i - new] if i >= new else None
        if isinstance(v, str):
            if like is None or _sym_dim(like, v) is None:
                where = f"of the like input {fmt_shape(like.shape)}" if like else "without a like"
                raise ShapeError(
                    f"'{v}' is not a dim {where}",
                    arg="shape",
                    hint="name a symbolic dim of the tensor given as in: {x: ..., like: ...}",
                )
            want: Dim = Sym.symbol(v)
        elif v == -1:
            if have is None:
                raise ShapeError(
                    f"-1 at entry {i} would keep a dim the input does not have",
                    arg="shape",
                    hint="new leading dims need a size",
                )
            want = have
        elif v <= 0:
            raise ShapeError(f"shape has size {v}; sizes are positive, or -1", arg="shape")
        else:
            want = v
        if have is not None and have != 1 and have != want:
            raise ShapeError(
                f"cannot expand dim {i - new} of size {have} to {want}: only size-1 dims expand",
                arg="shape",
            )
        out.append(want)
    return TensorType(tuple(out), x.dtype)


def _expand_lower(c: LowerCtx) -> Any:
    like = c.inputs.get("like")
    sizes: list[Any] = []
    for v in c.args.shape:
        if isinstance(v, str):
            sizes.append(c.method("size", like, _sym_dim(c.in_types["like"], v)))  # run time
        else:
            sizes.append(v)
    return c.method("expand", c.x, *sizes)


register(
    OpDef(
        "expand",
        ExpandArgs,
        _expand_shape,
        Style("shape", "Expand", plumbing=True),
        inputs=(Port("x"), Port("like", optional=True)),
        lower=_expand_lower,
        doc="Broadcast size-1 dims (a class token to the batch: shape [B, -1, -1], like: the "
        "patches); a view, no copy.",
    )
)

# --- transpose, permute --------------------------------------------------------------------


class TransposeArgs(OpArgs):
    """Swap two dims."""

    dim0: int = Field(description="one dim")
    dim1: int = Field(description="the other dim")


def _transpose_shape(ctx: ShapeCtx) -> TensorType:
    x, a = ctx.x, ctx.args
    i, j = norm_axis(a.dim0, x.rank, "dim0"), norm_axis(a.dim1, x.rank, "dim1")
    shape = list(x.shape)
    shape[i], shape[j] = shape[j], shape[i]
    return TensorType(tuple(shape), x.dtype)


def _transpose_lower(c: LowerCtx) -> Any:
    import torch

    return c.call(torch.transpose, c.x, c.args.dim0, c.args.dim1)


register(
    OpDef(
        "transpose",
        TransposeArgs,
        _transpose_shape,
        Style("shape", "Transpose", plumbing=True),
        lower=_transpose_lower,
        doc="Swap dims dim0 and dim1.",
    )
)


class PermuteArgs(OpArgs):
    """Reorder all dims: output dim i is input dim ``dims[i]``."""

    dims: list[int] = Field(min_length=1, description="output dim i is input dim dims[i]")


def _permute_shape(ctx: ShapeCtx) -> TensorType:
    x, dims = ctx.x, ctx.args.dims
    if len(dims) != x.rank:
        raise ShapeError(
            f"dims has {len(dims)} entries for a rank-{x.rank} input {fmt_shape(x.shape)}",
            arg="dims",
        )
    order = [norm_axis(d, x.rank, "dims") for d in dims]
    if sorted(order) != list(range(x.rank)):
        raise ShapeError(
            f"dims {dims} is not a permutation of 0..{x.rank - 1}: each dim exactly once",
            arg="dims",
        )
    return TensorType(tuple(x.shape[i] for i in order), x.dtype)


def _permute_lower(c: LowerCtx) -> Any:
    import torch

    return c.call(torch.permute, c.x, tuple(c.args.dims))


register(
    OpDef(
        "permute",
        PermuteArgs,
        _permute_shape,
        Style("shape", "Permute", plumbing=True),
        lower=_permute_lower,
        doc="Reorder dims.",
    )
)

# --- index ---------------------------------------------------------------------------------


class IndexArgs(OpArgs):
    """Basic indexing, Python style: ``"[:, -1, :]"``, ``"[..., 0]"``, ``"[:, 1:5:2]"`` (ints,
    slices ``a:b:c``, ``...``, ``None`` for a new dim of size 1; quote it in YAML), the same as a
    list: ``[":", -1, ":"]``, or one int. A slice of a symbolic dim keeps an exact size where
    the size does not depend on the dim (``1:`` gives ``S - 1``) or the dim's least size decides
    it (``:2`` of ``S`` declared ``dims: {S: {min: 2}}`` gives 2); otherwise its size is the
    symbol ``min(S, 16)`` (for ``:16``).
    """

    at: str | int | list[int | str | None] = Field(
        description="'[:, -1, :]' (quoted), [':', -1, ':'] or an int: "
        "ints, slices a:b:c, '...', None"
    )


def _index_shape(ctx: ShapeCtx) -> TensorType:
    return TensorType(indexed_shape(ctx.x, ctx.args.at, ctx.mins), ctx.x.dtype)


def _only_slices(a: IndexArgs) -> bool:
    """Drawn as plumbing: an index of slices only (a crop: Mamba's causal conv output cut to
    its length), not one that picks a position (ViT's [CLS]) or adds a dim (a mask's)."""
    return all(isinstance(i, slice) or i is ... for i in parse_index(a.at))


def _picks_first_token(a: IndexArgs) -> bool:
    """``x[:, 0]``: a sequence's first token (ViT's, BERT's [CLS]), folded into a head."""
    items = parse_index(a.at)
    return len(items) == 2 and items[0] == slice(None) and items[1] == 0


def _index_lower(c: LowerCtx) -> Any:
    key = short_key(c.args.at)
    if isinstance(key, tuple) and not key:  # the index selects all of x
        return c.x
    return c.call(operator.getitem, c.x, key)


register(
    OpDef(
        "index",
        IndexArgs,
        _index_shape,
        Style("shape", "Index", plumbing_for=_only_slices, head_pick_for=_picks_first_token),
        lower=_index_lower,
        doc="Basic indexing and slicing (x[:, -1], x[..., 0], x[:, 1:5]).",
    )
)

# --- concat, split -------------------------------------------------------------------------


class ConcatArgs(OpArgs):
    """Concatenate along ``dim``; all other dims must be equal."""

    dim: int = Field(default=-1, description="the dim to join along (default: the last)")


def _concat_shape(ctx: ShapeCtx) -> TensorType:
    xs = ctx.many("x")
    if not xs:
        raise ShapeError("concat needs inputs", port="x", hint="list them: in: [a, b]")
    first = xs[0]
    dim = norm_axis(ctx.args.dim, first.rank)
    total: Dim = 0
    for t in xs:
        if t.rank != first.rank:
            raise ShapeError(
                f"inputs have different ranks: {fmt_shape(first.shape)} and {fmt_shape(t.shape)}",
                port="x",
            )
        for i, (d0, d) in enumerate(zip(first.shape, t.shape, strict=True)):
            if i != dim and d0 != d:
                raise ShapeError(
                    f"inputs {fmt_shape(first.shape)} and {fmt_shape(t.shape)} differ at dim {i} "
                    f"({d0} vs {d}); only dim {dim} may differ",
                    port="x",
                )
        total = add(total, t.shape[dim])
    shape = list(first.shape)
    shape[dim] = total
    return TensorType(tuple(shape), common_dtype(xs, "x"))


def _concat_lower(c: LowerCtx) -> Any:
    import torch

    return c.call(torch.cat, list(c.inputs["x"]), c.args.dim)


register(
    OpDef(
        "concat",
        ConcatArgs,
        _concat_shape,
        Style("shape", "Concat", plumbing=True),
        inputs=(Port("x", variadic=True),),
        lower=_concat_lower,
        doc="Concatenate inputs along a dim (default: the last).",
    )
)

MAX_SPLIT = 16
SPLIT_RESULTS = tuple(f"out{i}" for i in range(MAX_SPLIT))

PosInt = Annotated[int, Field(gt=0)]


class SplitArgs(OpArgs):
    """Split along ``dim`` (default: the last) into pieces of the given ``sizes``, or into
    ``chunks`` equal pieces. Results are ``out0``, ``out1``, ... (at most 16)."""

    sizes: list[PosInt] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SPLIT,
        description="piece sizes, summing to the dim's size",
    )
    chunks: int | None = Field(
        default=None, gt=0, le=MAX_SPLIT, description="number of equal pieces (must divide)"
    )
    dim: int = Field(default=-1, description="the dim to split (default: the last)")


def _split_shape(ctx: ShapeCtx) -> dict[str, TensorType]:
    x, a = ctx.x, ctx.args
    if (a.sizes is None) == (a.chunks is None):
        raise ShapeError(
            "split needs exactly one of sizes (a list) and chunks (an int)",
            arg="chunks" if a.chunks is not None else None,
            hint="sizes: [256, 256] or chunks: 2",
        )
    dim = norm_axis(a.dim, x.rank)
    d = x.shape[dim]
    pieces: list[Dim]
    if a.sizes is not None:
        n = ctx.concrete(d, f"the split dim ({dim})", "x")
        if sum(a.sizes) != n:
            raise ShapeError(f"sizes sum to {sum(a.sizes)} but dim {dim} has size {n}", arg="sizes")
        pieces = list(a.sizes)
    else:
        piece = div_exact(d, a.chunks)
        if piece is None:
            raise ShapeError(
                f"dim {dim} (size {d}) does not split into {a.chunks} equal chunks",
                arg="chunks",
                hint="give sizes for an uneven split",
            )
        pieces = [piece] * a.chunks
    out = {}
    for i, p in enumerate(pieces):
        shape = list(x.shape)
        shape[dim] = p
        out[f"out{i}"] = TensorType(tuple(shape), x.dtype)
    return out


def _split_lower(c: LowerCtx) -> Any:
    import torch

    a = c.args
    if a.sizes is not None:
        parts = c.method("split", c.x, list(a.sizes), a.dim)
        n = len(a.sizes)
    else:
        parts = c.call(torch.chunk, c.x, a.chunks, a.dim)
        n = a.chunks
    return {f"out{i}": c.call(operator.getitem, parts, i) for i in range(n)}


register(
    OpDef(
        "split",
        SplitArgs,
        _split_shape,
        Style("shape", "Split", plumbing=True),
        results=SPLIT_RESULTS,
        lower=_split_lower,
        doc="Split along a dim into out0..outN (at most 16 pieces).",
    )
)

# --- matmul, scale -------------------------------------------------------------------------


def _matmul_shape(ctx: ShapeCtx) -> TensorType:
    a, b = ctx.get("a"), ctx.get("b")
    assert a is not None and b is not None
    need_float(a, "a", "matmul")
    need_float(b, "b", "matmul")
    for t, port in ((a, "a"), (b, "b")):
        if t.rank == 0:
            raise ShapeError("matmul needs at least 1-D inputs, found a scalar", port=port)
    # torch.matmul: a 1-D a is a row (1, k), a 1-D b a column (k, 1); both are dropped after.
    sa = (1, *a.shape) if a.rank == 1 else a.shape
    sb = (*b.shape, 1) if b.rank == 1 else b.shape
    if sa[-1] != sb[-2]:
        raise ShapeError(
            f"inner dims differ: a {fmt_shape(a.shape)} has {sa[-1]} columns, "
            f"b {fmt_shape(b.shape)} has {sb[-2]} rows",
            port="b",
        )
    try:
        batch = broadcast([sa[:-2], sb[:-2]], ["a", "b"])
    except ShapeError:
        raise ShapeError(
            f"batch dims of a {fmt_shape(a.shape)} and b {fmt_shape(b.shape)} do not broadcast "
            f"({fmt_shape(sa[:-2])} vs {fmt_shape(sb[:-2])})",
            port="b",
        ) from None
    rows: tuple[Dim, ...] = () if a.rank == 1 else (sa[-2],)
    cols: tuple[Dim, ...] = () if b.rank == 1 else (sb[-1],)
    return TensorType((*batch, *rows, *cols), common_dtype([a, b], "b"))


def _matmul_macs(args: Any, ins: Any, outs: dict[str, TensorType]) -> Dim:
    a = ins["a"]
    return mul(prod(outs["out"].shape), a.shape[-1])


def _matmul_lower(c: LowerCtx) -> Any:
    return c.call(operator.matmul, c.inputs["a"], c.inputs["b"])


register(
    OpDef(
        "matmul",
        NoArgs,
        _matmul_shape,
        Style("linear", "MatMul"),
        inputs=(Port("a"), Port("b")),
        macs=_matmul_macs,
        lower=_matmul_lower,
        doc="Matrix product a @ b, as torch.matmul (batch dims broadcast; 1-D cases too).",
    )
)


class ScaleArgs(OpArgs):
    """Multiply by a constant ``factor`` (as 1/sqrt(d_k) in attention)."""

    factor: float = Field(description="the constant to multiply by")


def _scale_shape(ctx: ShapeCtx) -> TensorType:
    need_float(ctx.x, what="scale")
    return ctx.x


def _scale_lower(c: LowerCtx) -> Any:
    return c.call(operator.mul, c.x, c.args.factor)


register(
    OpDef(
        "scale",
        ScaleArgs,
        _scale_shape,
        Style("arith", "Scale"),
        lower=_scale_lower,
        doc="Multiply by a constant factor.",
    )
)
