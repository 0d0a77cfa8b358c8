"""torch functions and tensor methods as archcomp op nodes.

:func:`call_op` takes the call's target and its arguments, already read (references to earlier
nodes are :class:`Ref`), and gives the op, its inputs and arguments, or a reason it cannot.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from archcomp.importer.functions import more_call


@dataclass(frozen=True)
class Ref:
    """A tensor of the spec: a node, a node's result (``lstm.h_n``) or an input."""

    name: str


class Unsupported(Exception):
    """The call cannot be expressed; the message says what."""


ELEMENTWISE = {
    F.relu: "relu",
    torch.relu: "relu",
    F.silu: "silu",
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.gelu: "gelu",
    torch.exp: "exp",
    torch.rsqrt: "rsqrt",
    torch.sqrt: "sqrt",
    torch.abs: "abs",
    torch.neg: "neg",
    torch.log: "log",
    operator.neg: "neg",
    "abs": "abs",
    "neg": "neg",
    "log": "log",
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "exp": "exp",
    "rsqrt": "rsqrt",
    "sqrt": "sqrt",
}
ARITH = {
    operator.add: "add",
    torch.add: "add",
    "add": "add",
    operator.mul: "mul",
    torch.mul: "mul",
    "mul": "mul",
    operator.sub: "sub",
    torch.sub: "sub",
    "sub": "sub",
    operator.truediv: "div",
    torch.div: "div",
    "div": "div",
}
Built = tuple[str, list[Ref] | dict[str, Ref], dict[str, Any]]


def _ref(v: Any, what: str) -> Ref:
    if not isinstance(v, Ref):
        raise Unsupported(f"{what} is {v!r}, not a tensor of the graph")
    return v


def _arith(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Built:
    if kwargs:
        raise Unsupported(f"{op} with keyword arguments {sorted(kwargs)}")
    a, b = args
    if isinstance(a, Ref) and isinstance(b, Ref):
        return op, [a, b], {}
    if isinstance(a, Ref) and isinstance(b, int | float) and not isinstance(b, bool):
        return op, [a], {"scalar": b}
    if isinstance(b, Ref) and isinstance(a, int | float) and not isinstance(a, bool):
        return op, [b], {"scalar": a} | ({} if op in ("add", "mul") else {"scalar_first": True})
    raise Unsupported(f"{op} of {a!r} and {b!r}")


def _index_text(key: Any) -> str:
    """A subscript as the ``index`` op's ``at`` (``[:, -1, :]``)."""
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for p in parts:
        if p is None:
            out.append("None")
        elif p is Ellipsis:
            out.append("...")
        elif isinstance(p, bool) or not isinstance(p, int | slice):
            raise Unsupported(f"indexing with {p!r} (only ints, slices, ... and None)")
        elif isinstance(p, int):
            out.append(str(p))
        else:
            if any(isinstance(v, Ref) for v in (p.start, p.stop, p.step)):
                raise Unsupported("a slice bound computed from a tensor")
            s = f"{'' if p.start is None else p.start}:{'' if p.stop is None else p.stop}"
            out.append(s + ("" if p.step is None else f":{p.step}"))
    return "[" + ", ".join(out) + "]"


def _sdpa(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Built:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
    bound = dict(zip(names, args, strict=False)) | kwargs
    ins = {n: _ref(bound[n], n) for n in ("query", "key", "value")}
    if bound.get("attn_mask") is not None:
        ins["mask"] = _ref(bound["attn_mask"], "attn_mask")
    if bound.get("enable_gqa"):
        raise Unsupported("enable_gqa")
    opts: dict[str, Any] = {}
    if bound.get("is_causal"):
        opts["causal"] = True
    if bound.get("dropout_p"):
        opts["dropout"] = bound["dropout_p"]
    if bound.get("scale") is not None:
        opts["scale"] = bound["scale"]
    return "scaled_dot_product_attention", ins, opts


def _ints(v: Any, what: str) -> list[int]:
    vals = list(v) if isinstance(v, tuple | list) else [v]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in vals):
        raise Unsupported(f"{what} {v!r}: sizes read from a tensor are not yet expressible")
    return vals


def call_op(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Built | Ref:
    """The op node of one call (``Ref`` where the call is plumbing that passes its input on)."""
    if kwargs.get("inplace") is False:
        kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
    if target in ELEMENTWISE:
        if kwargs and target is not F.gelu:
            raise Unsupported(f"keyword arguments {sorted(kwargs)}")
        extra = (
            {"approximate": kwargs["approximate"]}
            if kwargs.get("approximate", "none") != "none"
            else {}
        )
        return ELEMENTWISE[target], [_ref(args[0], "the input")], extra
    if target in ARITH:
        return _arith(ARITH[target], args, kwargs)
    if target is operator.getitem:
        return "index", [_ref(args[0], "the indexed value")], {"at": _index_text(args[1])}
    if target is F.scaled_dot_product_attention:
        return _sdpa(args, kwargs)
    if target in (torch.cat, torch.concat):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        return "concat", [_ref(t, "a joined tensor") for t in args[0]], {"dim": dim}
    if target in (F.softmax, "softmax"):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if dim is None:
            raise Unsupported("softmax without dim")
        return "softmax", [_ref(args[0], "the input")], {"dim": dim}
    if target in (torch.flatten, "flatten"):
        names = ("start_dim", "end_dim")
        bound = dict(zip(names, args[1:], strict=False)) | kwargs
        opts = {"start_dim": bound.get("start_dim", 0), "end_dim": bound.get("end_dim", -1)}
        return "flatten", [_ref(args[0], "the input")], opts
    if target in (torch.transpose, "transpose"):
        return "transpose", [_ref(args[0], "the input")], {"dim0": args[1], "dim1": args[2]}
    if target in (torch.permute, "permute"):
        dims = args[1] if len(args) == 2 and isinstance(args[1], tuple | list) else args[1:]
        return "permute", [_ref(args[0], "the input")], {"dims": _ints(dims, "dims")}
    if target in (torch.reshape, "reshape", "view"):
        shape = args[1] if len(args) == 2 and isinstance(args[1], tuple | list) else args[1:]
        return "reshape", [_ref(args[0], "the input")], {"shape": _ints(shape, "shape")}
    if target in ("contiguous",):
        return _ref(args[0], "the input")
    more = more_call(target, args, kwargs)
    if more is not None:
        return more[0], [_ref(r, "an input") for r in more[1]], more[2]
    raise Unsupported("no archcomp op for it")


def describe(target: Any, kind: str, args: tuple[Any, ...] = ()) -> str:
    """The call as the error lists it: ``torch.fft.fft``, ``Tensor.view``, ``F.pad``."""
    if kind == "call_method":
        return f"Tensor.{target}"
    if target is getattr and len(args) > 1:
        return f"Tensor.{args[1]}"
    for prefix, space in _NAMESPACES:
        for attr in dir(space):
            if getattr(space, attr, None) is target:
                return f"{prefix}.{attr}"
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
    return f"{mod}.{name}".lstrip(".")


_NAMESPACES = (
    ("torch", torch),
    ("F", F),
    ("torch.fft", torch.fft),
    ("torch.linalg", torch.linalg),
    ("torch.special", torch.special),
    ("operator", operator),
)
