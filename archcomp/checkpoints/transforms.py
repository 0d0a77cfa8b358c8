"""The closed list of tensor transforms a mapping may apply, each with its exact inverse.

Written in a rule's ``transforms:`` list, applied in order from the checkpoint's tensor to the
model's (``export`` applies the inverses in reverse order):

==============================================  ===============================================
``transpose`` / ``{transpose: [0, 1]}``         swap two dims (a view; GPT-2's Conv1D weights)
``split`` / ``{split: {dim: 0, sizes: [..]}}``  one tensor -> the rule's alternatives, in order
                                                (equal parts unless ``sizes``); last transform
``concat`` / ``{concat: {dim: 0, sizes: [..]}}``  the rule's alternatives -> one tensor; first
``{reshape: {from: [..], to: [..]}}``           a new shape of the same elements
``{permute_qk: {heads: H, from: interleaved,    RoPE's rotation pairs: adjacent (Meta, GPT-J)
to: half}}``                                    or half a head apart (transformers' Llama)
``{stack: e}``                                  the keys of every index 0..n-1 of placeholder
                                                ``{e}`` -> one tensor, new dim 0 of size n
                                                (experts saved one by one); first transform
==============================================  ===============================================

Arguments are ints or the spec's own ``${...}`` expressions over its params (``${d_model}``),
evaluated when the spec's params are known (:meth:`TransformSpec.resolve`). Nothing here runs
code from a mapping: a transform is one of these classes, chosen by name from :data:`NAMES`.

Each resolved :class:`Transform` works at two levels: :meth:`~Transform.shapes` on shapes
(planning: a mismatch is found before any tensor is read) and :meth:`~Transform.apply` on
tensors (views where torch can make one: ``transpose``, ``split``, most ``reshape``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archcomp.frontend.expr import ExprError, substitute

if TYPE_CHECKING:
    import torch

Shape = tuple[int, ...]
LAYOUTS = ("interleaved", "half")
NAMES = ("transpose", "split", "concat", "reshape", "permute_qk", "stack")
MAX_DIMS = 16


class TransformError(Exception):
    """A transform that cannot apply; ``where`` is a path inside the transform's YAML value."""

    def __init__(self, message: str, where: tuple[str | int, ...] = (), hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint


class Transform:
    """One resolved step. ``parts_in``/``parts_out``: how many tensors it takes and gives."""

    name: str = ""

    def shapes(self, shapes: Sequence[Shape]) -> list[Shape]:
        raise NotImplementedError

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def inverse(self) -> Transform:
        raise NotImplementedError


def _dim(dim: int, shape: Shape, what: str) -> int:
    if not -len(shape) <= dim < len(shape):
        raise TransformError(f"{what} needs dim {dim}, but the tensor has shape {list(shape)}")
    return dim % len(shape)


@dataclass(frozen=True)
class Transpose(Transform):
    a: int = 0
    b: int = 1
    name = "transpose"

    def shapes(self, shapes: Sequence[Shape]) -> list[Shape]:
        (s,) = shapes
        a, b = _dim(self.a, s, "transpose"), _dim(self.b, s, "transpose")
        out = list(s)
        out[a], out[b] = out[b], out[a]
        return [tuple(out)]

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [tensors[0].transpose(self.a, self.b)]

    def inverse(self) -> Transform:
        return self


@dataclass(frozen=True)
class Split(Transform):
    parts: int
    dim: int = 0
    sizes: tuple[int, ...] | None = None
    name = "split"

    def _sizes(self, s: Shape) -> tuple[int, ...]:
        d = _dim(self.dim, s, "split")
        if self.sizes is not None:
            if sum(self.sizes) != s[d]:
                raise TransformError(
                    f"split sizes {list(self.sizes)} add up to {sum(self.sizes)}, but dim "
                    f"{self.dim} of the tensor {list(s)} is {s[d]}"
                )
            return self.sizes
        if s[d] % self.parts:
            raise TransformError(
                f"split into {self.parts} equal parts: dim {self.dim} of {list(s)} is {s[d]}, "
                f"not a multiple of {self.parts}",
                hint="give the parts' sizes: {split: {dim: 0, sizes: [...]}}",
            )
        return (s[d] // self.parts,) * self.parts

    def shapes(self, shapes: Sequence[Shape]) -> list[Shape]:
        (s,) = shapes
        d = _dim(self.dim, s, "split")
        return [(*s[:d], n, *s[d + 1 :]) for n in self._sizes(s)]

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        import torch

        t = tensors[0]
        return list(torch.split(t, list(self._sizes(tuple(t.shape))), dim=self.dim))

    def inverse(self) -> Transform:
        return Concat(self.parts, self.dim, self.sizes)


@dataclass(frozen=True)
class Concat(Transform):
    parts: int
    dim: int = 0
    sizes: tuple[int, ...] | None = None
    name = "concat"

    def shapes(self, shapes: Sequence[Shape]) -> list[Shape]:
        first = shapes[0]
        d = _dim(self.dim, first, "concat")
        for s in shapes[1:]:
            if len(s) != len(first) or any(
                x != y for i, (x, y) in enumerate(zip(s, first, strict=True)) if i != d
            ):
                raise TransformError(
                    f"concat along dim {self.dim}: the parts' shapes "
                    f"{[list(x) for x in shapes]} differ in another dim"
                )
        got = tuple(s[d] for s in shapes)
        want = self.sizes if self.sizes is not None else (got[0],) * len(got)
        if got != want:
            raise TransformError(
                f"concat expects parts of sizes {list(want)} along dim {self.dim}, the "
                f"checkpoint's are {list(got)}",
                hint=None if self.sizes else "give the sizes: {concat: {dim: 0, sizes: [...]}}",
            )
        return [(*first[:d], sum(got), *first[d + 1 :])]

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        import torch

        return [torch.cat(list(tensors), dim=self.dim)]

    def inverse(self) -> Transform:
        return Split(self.parts, self.dim, self.sizes)


@dataclass(frozen=True)
class Reshape(Transform):
    src: Shape
    dst: Shape
    name = "reshape"

    def shapes(self, shapes: Sequence[Shape]) -> list[Shape]:
        (s,) = shapes
        if tuple(s) != self.src:
            raise TransformError(
                f"reshape from {list(self.src)} to {list(self.dst)}, but the tensor has shape "
                f"{list(s)}"
            )
        return [self.dst]

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [tensors[0].reshape(self.dst)]

    def inverse(self) -> Transform:
        return Reshape(self.dst, self.src)


@dataclass(frozen=True)
class PermuteQK(Transform):
    """Reorder the rows of each head: RoPE rotates pairs of features, adjacent ones
    (``interleaved``: 0,1 then 2,3; Meta's and GPT-J's layout) or ones half a head apart
    (``half``: 0,d/2 then 1,d/2+1; transformers' ``rotate_half``)."""

    heads: int
    src: str
    dst: str
    name = "permute_qk"

    def shapes(self, shapes: Sequence[Shape]) -> list[Shape]:
        (s,) = shapes
        if not s or s[0] % self.heads or (s[0] // self.heads) % 2:
            raise TransformError(
                f"permute_qk over {self.heads} heads needs dim 0 to be heads x an even head "
                f"size; the tensor has shape {list(s)}"
            )
        return [tuple(s)]

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        t = tensors[0]
        if self.src == self.dst:
            return [t]
        rest = tuple(t.shape[1:])
        half = t.shape[0] // self.heads // 2
        # interleaved -> half: (heads, hd/2, 2, ...) -> (heads, 2, hd/2, ...); and back
        inner = (half, 2) if self.src == "interleaved" else (2, half)
        return [t.reshape(self.heads, *inner, *rest).transpose(1, 2).reshape(t.shape)]

    def inverse(self) -> Transform:
        return PermuteQK(self.heads, self.dst, self.src)


@dataclass(frozen=True)
class Stack(Transform):
    """The tensors of every index of a placeholder -> one tensor per part, the index its new
    dim 0: ``experts.{e}.w1.weight`` (F, d) for e = 0..E-1 -> (E, F, d). The input lists each
    part's tensors in index order, part after part (w1 of every expert, then w3 of every
    expert); the output holds one tensor per part."""

    parts: int
    name = "stack"

    def shapes(self, shapes: Sequence[Shape]) -> list[Shape]:
        n = len(shapes) // self.parts
        out = []
        for p in range(self.parts):
            group = shapes[p * n : (p + 1) * n]
            if any(tuple(s) != tuple(group[0]) for s in group):
                raise TransformError(
                    f"stack of {n} tensors of different shapes: "
                    f"{sorted({str(list(s)) for s in group})}"
                )
            out.append((n, *group[0]))
        return out

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        import torch

        n = len(tensors) // self.parts
        return [torch.stack(list(tensors[p * n : (p + 1) * n])) for p in range(self.parts)]

    def inverse(self) -> Transform:
        return Unstack(self.parts)


@dataclass(frozen=True)
class Unstack(Transform):
    """:class:`Stack`'s inverse (written on export only): each tensor -> its dim-0 slices,
    part after part."""

    parts: int
    name = "unstack"

    def shapes(self, shapes: Sequence[Shape]) -> list[Shape]:
        if any(not s for s in shapes):
            raise TransformError("unstack needs a tensor with a dim to slice (a stack's dim 0)")
        return [tuple(s[1:]) for s in shapes for _ in range(s[0])]

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [piece for t in tensors for piece in t.unbind(0)]

    def inverse(self) -> Transform:
        return Stack(self.parts)


@dataclass(frozen=True)
class TransformSpec:
    """A transform as written: its name and raw arguments (ints or ``${...}`` text)."""

    name: str
    args: Mapping[str, Any]

    def resolve(self, env: Mapping[str, Any], parts: int) -> Transform:
        """The transform with its expressions evaluated against the spec's params ``env``;
        ``parts`` is the number of alternatives of a split or concat (of a stack: of the
        checkpoint key)."""
        a = self.args
        if self.name == "transpose":
            x, y = (_int(v, env, ("transpose", i)) for i, v in enumerate(a.get("dims", [0, 1])))
            return Transpose(x, y)
        if self.name in ("split", "concat"):
            dim = _int(a.get("dim", 0), env, (self.name, "dim"))
            sizes = a.get("sizes")
            sz = None
            if sizes is not None:
                if len(sizes) != parts:
                    raise TransformError(
                        f"{self.name} has {len(sizes)} sizes for {parts} parts",
                        (self.name, "sizes"),
                    )
                sz = tuple(
                    _int(v, env, (self.name, "sizes", i), positive=True)
                    for i, v in enumerate(sizes)
                )
            return Split(parts, dim, sz) if self.name == "split" else Concat(parts, dim, sz)
        if self.name == "stack":
            return Stack(parts)
        if self.name == "reshape":
            src = tuple(
                _int(v, env, ("reshape", "from", i), positive=True) for i, v in enumerate(a["from"])
            )
            dst = tuple(
                _int(v, env, ("reshape", "to", i), positive=True) for i, v in enumerate(a["to"])
            )
            if _numel(src) != _numel(dst):
                raise TransformError(
                    f"reshape from {list(src)} ({_numel(src)} elements) to {list(dst)} "
                    f"({_numel(dst)} elements)",
                    ("reshape",),
                )
            return Reshape(src, dst)
        heads = _int(a["heads"], env, ("permute_qk", "heads"), positive=True)
        return PermuteQK(heads, str(a["from"]), str(a["to"]))


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _int(
    value: Any, env: Mapping[str, Any], where: tuple[str | int, ...], positive: bool = False
) -> int:
    try:
        v = substitute(value, env)
    except ExprError as exc:
        raise TransformError(exc.message, where, exc.hint) from None
    if isinstance(v, bool) or not isinstance(v, int):
        raise TransformError(f"expected an int, found {v!r}", where)
    if positive and v < 1:
        raise TransformError(f"expected a size >= 1, found {v}", where)
    return v


# ----------------------------------------------------------------------------- parsing


def parse(value: Any) -> TransformSpec:
    """Read one entry of a ``transforms:`` list; a :class:`TransformError` says what is wrong
    (``where`` relative to the entry)."""
    if isinstance(value, str):
        if value in ("transpose", "split", "concat"):
            return TransformSpec(value, {})
        if value in NAMES:
            raise TransformError(f"'{value}' needs arguments", hint=_USAGE[value])
        return _unknown(value, ())
    if not isinstance(value, dict) or len(value) != 1:
        raise TransformError(
            "a transform is a name (transpose) or a one-key mapping ({split: {dim: 1}})",
            hint="transforms: " + ", ".join(NAMES),
        )
    ((name, args),) = value.items()
    if name not in NAMES:
        return _unknown(name, (name,))
    if name == "transpose":
        if not (isinstance(args, list) and len(args) == 2 and all(_intlike(v) for v in args)):
            raise TransformError("transpose takes two dims: {transpose: [0, 1]}", (name,))
        return TransformSpec(name, {"dims": args})
    if name in ("split", "concat"):
        if _intlike(args):
            return TransformSpec(name, {"dim": args})
        spec = _fields(name, args, required=(), optional=("dim", "sizes"))
        if "dim" in spec and not _intlike(spec["dim"]):
            raise TransformError(f"{name}'s dim is an int", (name, "dim"))
        sizes = spec.get("sizes")
        if sizes is not None and not (
            isinstance(sizes, list) and sizes and all(_intlike(v) for v in sizes)
        ):
            raise TransformError(f"{name}'s sizes are a list of ints", (name, "sizes"))
        return TransformSpec(name, spec)
    if name == "stack":
        if not (isinstance(args, str) and _PLACEHOLDER.match(args)):
            raise TransformError(
                "stack takes the placeholder it stacks over: {stack: e}", (name,), _USAGE[name]
            )
        return TransformSpec(name, {"over": args})
    if name == "reshape":
        spec = _fields(name, args, required=("from", "to"), optional=())
        for side in ("from", "to"):
            dims = spec[side]
            if not (
                isinstance(dims, list) and len(dims) <= MAX_DIMS and all(_intlike(v) for v in dims)
            ):
                raise TransformError(
                    f"reshape's {side} is a shape: a list of at most {MAX_DIMS} sizes "
                    "([] for a 0-d tensor)",
                    (name, side),
                )
        return TransformSpec(name, spec)
    spec = _fields(name, args, required=("heads", "from", "to"), optional=())
    if not _intlike(spec["heads"]):
        raise TransformError("permute_qk's heads is an int", (name, "heads"))
    for side in ("from", "to"):
        if spec[side] not in LAYOUTS:
            raise TransformError(
                f"permute_qk's {side} is one of {', '.join(LAYOUTS)}, found {spec[side]!r}",
                (name, side),
            )
    if spec["from"] == spec["to"]:
        raise TransformError("permute_qk from and to the same layout does nothing", (name,))
    return TransformSpec(name, spec)


_USAGE = {
    "reshape": "{reshape: {from: [1, 1, '${d_model}'], to: ['${d_model}']}}",
    "permute_qk": "{permute_qk: {heads: '${h}', from: interleaved, to: half}}",
    "stack": "{stack: e}, with the placeholder {e} in the checkpoint key only",
}
_PLACEHOLDER = re.compile(r"[a-z_][a-z0-9_]*\Z")


def _unknown(name: str, where: tuple[str | int, ...]) -> TransformSpec:
    from archcomp.base.errors import did_you_mean

    hint = did_you_mean(str(name), NAMES) or "transforms: " + ", ".join(NAMES)
    raise TransformError(f"unknown transform '{name}'", where, hint)


def _intlike(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, str) and v.strip().startswith("${") and v.strip().endswith("}")
    )


def _fields(
    name: str, args: Any, required: tuple[str, ...], optional: tuple[str, ...]
) -> dict[str, Any]:
    if not isinstance(args, dict):
        raise TransformError(f"{name} takes a mapping of arguments", (name,), _USAGE.get(name))
    from archcomp.base.errors import did_you_mean

    for key in args:
        if key not in required + optional:
            raise TransformError(
                f"unknown argument '{key}' of {name}",
                (name, key),
                did_you_mean(str(key), required + optional)
                or f"{name} takes {', '.join(required + optional)}",
            )
    for key in required:
        if key not in args:
            raise TransformError(f"{name} needs '{key}'", (name,), _USAGE.get(name))
    return dict(args)
