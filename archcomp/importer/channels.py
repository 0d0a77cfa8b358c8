"""A LayerNorm subclass that calls ``F.layer_norm`` on its own weight, channels last or first.

ConvNeXt's ``ConvNextLayerNorm(nn.LayerNorm)`` normalizes the last dim (``channels_last``) or,
with ``data_format="channels_first"``, permutes (B, C, H, W) to (B, H, W, C), normalizes and
permutes back. The first is one ``layer_norm`` node; the second the three nodes the shipped
``convnext`` spec writes: ``permute`` to channels last, ``layer_norm`` (its id the module's, so
its weight keeps its key) and ``permute`` back.
"""

from __future__ import annotations

from typing import Any

from torch import fx, nn

# ``flat`` is an archcomp.importer.exported.Flat (not imported: exported.py's users import this)
Flat = Any

_LAYER_NORM = "aten.layer_norm.default"
_PERMUTE = "aten.permute.default"
TO_LAST, TO_FIRST = [0, 2, 3, 1], [0, 3, 1, 2]


def layer_norm_args(flat: Flat, path: str, m: nn.Module, n: fx.Node) -> dict[str, Any] | None:
    """The ``layer_norm`` arguments of ``n``, ``aten.layer_norm`` of one input over its last dim
    with the module's own weight and bias (or none) and eps; None where it is anything else."""
    if not isinstance(m, nn.LayerNorm) or str(n.target) != _LAYER_NORM or len(n.args) < 2:
        return None
    x, shape, *rest = n.args
    weight, bias, eps = (*rest, None, None, None)[:3]
    size = list(getattr(getattr(x, "meta", {}).get("val"), "shape", ()))[-1:]
    if not isinstance(shape, list | tuple) or list(shape) != [int(s) for s in size]:
        return None
    if list(m.normalized_shape) != list(shape):
        return None
    keys = [flat.weights.get(flat.get(a)) if a is not None else None for a in (weight, bias)]
    own = [f"{path}.weight" if m.weight is not None else None]
    own.append(f"{path}.bias" if m.bias is not None else None)
    if keys != own or (eps if eps is not None else 1e-5) != m.eps:
        return None
    args: dict[str, Any] = {"eps": m.eps}
    if m.weight is None:
        args["elementwise_affine"] = False
    elif m.bias is None:
        args["bias"] = False
    return args


def channels_first(
    flat: Flat, path: str, m: nn.Module, group: list[fx.Node]
) -> tuple[fx.Node, fx.Node, fx.Node, dict[str, Any]] | None:
    """``(to_last, norm, to_first, args)`` where ``group`` is ``permute(x, [0, 2, 3, 1])``, the
    module's layer norm of it and ``permute(.., [0, 3, 1, 2])``, each reading the one before."""
    if len(group) != 3 or [str(n.target) for n in group] != [_PERMUTE, _LAYER_NORM, _PERMUTE]:
        return None
    last, norm, first = group
    if list(last.args[1]) != TO_LAST or list(first.args[1]) != TO_FIRST:  # type: ignore[arg-type]
        return None
    if flat.get(norm.args[0]) is not last or flat.get(first.args[0]) is not norm:
        return None
    args = layer_norm_args(flat, path, m, norm)
    return None if args is None else (last, norm, first, args)
