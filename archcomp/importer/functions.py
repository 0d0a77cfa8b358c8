"""Calls beyond calls.py's table, as archcomp ops: pooling functions (``F.max_pool2d``,
``torch.avg_pool1d``, ``F.adaptive_avg_pool2d``, ...), ``torch.mean`` over dims,
``torch.select`` (aten's ``x[:, 0]``) as an ``index``, ``torch.roll``, comparisons
(``mask != 0``), ``chunk``/``split`` as ``split``, and CLIP's ``torch.pow`` (a constant
exponent), ``torch.sum`` over dims, ``torch.matmul``, ``Tensor.t``, ``argmax``, ``gather`` and
``expand`` to literal sizes; ``F.interpolate`` as ``upsample``; arguments equal to the op's
defaults are left out."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F

_MAX = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
COMPARE: dict[Any, str] = {
    operator.eq: "eq",
    operator.ne: "ne",
    operator.lt: "lt",
    operator.le: "le",
    operator.gt: "gt",
    operator.ge: "ge",
}
COMPARE |= {getattr(torch, op): op for op in set(COMPARE.values())}
COMPARE |= {op: op for op in set(COMPARE.values())}  # the tensor methods
POOLS: dict[Any, tuple[str, tuple[str, ...]]] = {}
for _n in (1, 2):
    for _kind, _names in (("max", _MAX), ("avg", _AVG)):
        for _space in (torch, F):
            _fn = getattr(_space, f"{_kind}_pool{_n}d", None)
            if _fn is not None:
                POOLS[_fn] = (f"{_kind}_pool{_n}d", _names)
    for _kind in ("avg", "max"):
        POOLS[getattr(F, f"adaptive_{_kind}_pool{_n}d")] = (
            f"adaptive_{_kind}_pool{_n}d",
            ("output_size", "return_indices"),
        )


def _one_or_list(v: Any) -> Any:
    return list(v) if isinstance(v, tuple | list) else v


def _one(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return v[0] if len(set(v)) == 1 else list(v)
    return v


def more_call(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``(op, [input], args)`` of a call of this module's table; None for any other call;
    raises ValueError for what the ops do not take (indices, a divisor override)."""
    if target in (torch.mean, "mean") and (len(args) > 1 or "dim" in kwargs):
        bound = dict(zip(("dim", "keepdim"), args[1:], strict=False)) | kwargs
        if set(bound) - {"dim", "keepdim"}:
            raise ValueError(f"mean with {sorted(set(bound) - {'dim', 'keepdim'})}")
        dim = bound["dim"]
        opts = {"dim": list(dim) if isinstance(dim, tuple | list) else dim}
        return "mean", [args[0]], opts | ({"keepdim": True} if bound.get("keepdim") else {})
    if target in (torch.select, "select"):
        dim, i = (*args[1:], *kwargs.values())[:2]
        if not isinstance(dim, int) or not isinstance(i, int) or dim < 0:
            raise ValueError(f"select of dim {dim!r} at {i!r} (only a literal dim from the front)")
        return "index", [args[0]], {"at": "[" + ":, " * dim + f"{i}]"}
    if target in COMPARE and not kwargs and len(args) == 2:
        return _compare(COMPARE[target], *args)
    if target in (torch.roll, "roll"):
        shifts, dims = (*args[1:], *kwargs.values(), None)[:2]
        if dims is None:
            raise ValueError("roll without dims (of the flattened tensor)")
        one = {"shifts": _one_or_list(shifts), "dims": _one_or_list(dims)}
        return "roll", [args[0]], one
    if target in (F.pad, "pad"):
        bound = dict(zip(("pad", "mode", "value"), args[1:], strict=False)) | kwargs
        opts = {"pad": list(bound["pad"]), "mode": bound.get("mode") or "constant"}
        return "pad", [args[0]], opts | {"value": bound.get("value") or 0}
    if target == "slice":  # aten's x[:, a:b:s] of one dim (a step of a strided slice)
        dim, start, end, step = (*args[1:], *(None,) * 4)[:4]
        if not isinstance(dim, int) or dim < 0:
            raise ValueError(f"a slice of dim {dim!r} (only a literal dim from the front)")
        stop = "" if end is None or end >= 1 << 62 else end
        at = f"{start or ''}:{stop}" + ("" if step in (1, None) else f":{step}")
        return "index", [args[0]], {"at": "[" + ":, " * dim + at + "]"}
    if target in (torch.chunk, "chunk", torch.split, "split"):
        return _split(target, args, kwargs)
    reduced = _reduce(target, args, kwargs)
    if reduced is not None:
        return reduced
    if target is F.interpolate:
        return _interpolate(args, kwargs)
    if target not in POOLS:
        return None
    op, names = POOLS[target]
    bound = dict(zip(names, args[1:], strict=False)) | kwargs
    if bound.pop("return_indices", False) or bound.pop("divisor_override", None) is not None:
        raise ValueError(f"{op} with return_indices or divisor_override")
    opts = {k: _one(v) for k, v in bound.items() if v is not None}
    if "stride" in opts and opts["stride"] in ([], opts.get("kernel_size")):
        del opts["stride"]
    return op, [args[0]], opts


def _reduce(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``torch.pow(x, c)`` (``x ** c``), ``torch.sum(x, dims, keepdim)``, ``torch.argmax(x, dim,
    keepdim)``, ``torch.matmul(a, b)`` (``a @ b``), ``x.t()``, ``torch.gather(x, dim, index)``
    and ``x.expand(sizes)`` to literal sizes (CLIP's L2 norm, its EOS pooling and its logits) as
    ops; None for any other call."""
    if target in (torch.pow, operator.pow, "pow"):
        c = (*args[1:], *kwargs.values())[0]
        if isinstance(c, bool) or not isinstance(c, int | float):
            raise ValueError(f"pow to {c!r} (only a constant exponent)")
        return "pow", [args[0]], {"exponent": c}
    if target in (torch.sum, "sum", torch.argmax, "argmax"):
        bound = dict(zip(("dim", "keepdim"), args[1:], strict=False)) | kwargs
        if set(bound) - {"dim", "keepdim"} or bound.get("dim") is None:
            raise ValueError(f"{target} without a dim, or with {sorted(bound)}")
        op = "sum" if target in (torch.sum, "sum") else "argmax"
        dim = bound["dim"]
        dim = (dim[0] if len(dim) == 1 else list(dim)) if isinstance(dim, list | tuple) else dim
        return op, [args[0]], {"dim": dim} | ({"keepdim": True} if bound.get("keepdim") else {})
    if target in (torch.matmul, operator.matmul, "matmul") and not kwargs and len(args) == 2:
        return "matmul", [args[0], args[1]], {}
    if target in (torch.t, "t"):
        return "transpose", [args[0]], {"dim0": 0, "dim1": 1}
    if target in (torch.gather, "gather") and not kwargs and len(args) == 3:
        return "gather", [args[0], args[2]], {"dim": args[1]}  # (x, dim, index)
    if target == "expand" and not kwargs:
        sizes = args[1] if len(args) == 2 and isinstance(args[1], list | tuple) else args[1:]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
            raise ValueError(f"an expand to {list(sizes)!r} (sizes read from a tensor)")
        return "expand", [args[0]], {"shape": list(sizes)}
    return None


_INTERPOLATE = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor")


def _interpolate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``F.interpolate(x, size | scale_factor, mode, align_corners)`` as ``upsample`` (DINOv2's
    position-table resize); literal sizes, modes the op has, no antialias."""
    bound = dict(zip(_INTERPOLATE, args[1:], strict=False)) | kwargs
    if bound.pop("antialias", False) or bound.pop("recompute_scale_factor", None):
        raise ValueError("interpolate with antialias or recompute_scale_factor")
    if set(bound) - set(_INTERPOLATE):
        raise ValueError(f"interpolate with {sorted(set(bound) - set(_INTERPOLATE))}")
    if bound.get("mode", "nearest") not in ("nearest", "linear", "bilinear", "bicubic"):
        raise ValueError(f"interpolate in mode {bound['mode']!r} (no upsample mode of it)")
    for k in ("size", "scale_factor"):
        v = bound.get(k)
        vals = v if isinstance(v, list | tuple) else [v]
        if v is not None and not all(isinstance(x, int | float) for x in vals):
            raise ValueError(f"interpolate to a {k} read from a tensor")
    opts = {k: _one_or_list(v) for k, v in bound.items() if v is not None}
    return "upsample", [args[0]], opts


def _split(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``x.chunk(n, dim)`` and ``x.split(sizes, dim)`` as ``split`` (pieces ``out0``, ...)."""
    how, dim = (*args[1:], *kwargs.values(), 0)[:2]
    if target in (torch.chunk, "chunk") and isinstance(how, int):
        return "split", [args[0]], {"chunks": how, "dim": dim}
    if isinstance(how, list | tuple) and all(isinstance(v, int) for v in how):
        return "split", [args[0]], {"sizes": list(how), "dim": dim}
    raise ValueError(f"a split into {how!r} (only a chunk count or a list of literal sizes)")


def pieces(op: str, opts: dict[str, Any]) -> int:
    """How many results a ``split`` gives; 0 for any other op."""
    if op != "split":
        return 0
    return int(opts["chunks"]) if "chunks" in opts else len(opts["sizes"])


def _compare(op: str, a: Any, b: Any) -> Any:
    """``x != 0`` as ``{op: ne, scalar: 0}``; two tensors as the op of both (calls.py checks
    that each input is a tensor of the graph)."""
    number = isinstance(b, int | float) and not isinstance(b, bool)
    if not isinstance(a, int | float | bool):
        return (op, [a], {"scalar": b}) if number else (op, [a, b], {})
    raise ValueError(f"{op} of {a!r} and {b!r} (a tensor with a tensor or a number after it)")
