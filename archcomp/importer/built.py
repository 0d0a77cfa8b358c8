"""Modules that archcomp built (``archcomp.build``'s output) read back as the ops they lowered.

A built model records, per node, the op, its resolved arguments, its tie and the path of the
module the op lowered to (``node_meta``). Importing such a model (the fixed point: import of a
built spec builds the same module) maps each of those modules that is not a torch.nn leaf (a
leaf maps back from its constructor values, as in any module) to its node's op and arguments,
the sizes its input determines left out, and keeps each tie; blocks, repeats and the calls
between ops are traced as for any module.
"""

from __future__ import annotations

import contextlib
from typing import Any

from torch import nn

from archcomp.importer.leaves import LEAVES
from archcomp.ops import all_ops

Op = tuple[str, dict[str, Any], tuple[str, ...]]  # op, arguments, input ports in call order
_INFERRED = {("linear", "in_features")}  # inferred sizes whose field says nothing of it


def built_ops(module: nn.Module) -> dict[str, Op]:
    """Module path -> (op, arguments, ports) for each op module of a built model; {} for any
    other module."""
    meta = getattr(module, "node_meta", None)
    if not isinstance(meta, dict):
        return {}
    out: dict[str, Op] = {}
    for info in meta.values():
        path, op = info.get("module"), info.get("op")
        if not isinstance(path, str) or op not in all_ops() or info.get("shared_with"):
            continue
        if path in dict(module.named_parameters()) or path in dict(module.named_buffers()):
            continue  # a tensor keyed by its node id (key: self): read as a bare tensor
        if type(module.get_submodule(path)) in LEAVES:
            continue  # a torch.nn leaf: what it computes, not the node's op (a scaled
            # embedding's scale is a mul of its own in the built forward)
        out[path] = (op, _written(op, info.get("args") or {}), tuple(info.get("inputs") or {}))
    return out


def built_results(op: str) -> tuple[str, ...] | None:
    """The results of a built op module as it returns them: torch's structure for the
    recurrent ops, else a tuple in the op's result order (a mixture of experts: out,
    aux_loss); None for an op of one result."""
    from archcomp.importer.leaves import RESULTS

    if op in RESULTS:
        return RESULTS[op]
    results = tuple(all_ops()[op].results)
    return results if len(results) > 1 else None


def built_ties(module: nn.Module) -> dict[str, dict[str, str]]:
    """Module path -> its node's ``tie`` (``{weight: wte.weight}``) in a built model."""
    meta = getattr(module, "node_meta", None)
    if not isinstance(meta, dict):
        return {}
    return {
        info["module"]: dict(info["tie"])
        for info in meta.values()
        if isinstance(info.get("module"), str) and info.get("tie")
    }


def relative_tie(tie: dict[str, str], where: str) -> dict[str, str] | None:
    """The tie as the body at ``where`` writes it; None when it reaches outside that body."""
    prefix = f"{where}." if where else ""
    if not all(t.startswith(prefix) for t in tie.values()):
        return None
    return {k: t[len(prefix) :] for k, t in tie.items()}


def _written(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments a spec writes: not the ones the input determines, not the defaults."""
    model = all_ops()[op].args
    fields = model.model_fields
    # nested defaults (rope's unset scaling fields) left out too; arguments that do not
    # validate on their own (pydantic's ValidationError) are kept as recorded
    with contextlib.suppress(ValueError):
        args = model.model_validate(args).model_dump(mode="json", exclude_defaults=True)
    keep = {}
    for k, v in args.items():
        f = fields.get(k)
        inferred = (op, k) in _INFERRED or "inferred" in ((f.description or "") if f else "")
        if f is None or inferred or v == f.default or (v is None and f.default is None):
            continue
        keep[k] = _pruned(v)
    return keep


def _pruned(v: Any) -> Any:
    """A nested argument without its unset (None) entries (``rope: {theta, max_len}``)."""
    if isinstance(v, dict):
        return {k: _pruned(x) for k, x in v.items() if x is not None}
    return v


def built_call(made: Op, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The node's inputs by port (one tensor: a list, as other ops) or a reason string."""
    from archcomp.importer.calls import Ref

    op, _, ports = made
    bound = dict(zip(ports, args, strict=False)) | kwargs
    if len(args) > len(ports) or set(bound) - set(ports):
        return f"a {op} called with more than its inputs {list(ports)}"
    if not all(isinstance(v, Ref) for v in bound.values()):
        return f"a {op} called with an argument that is no tensor of the graph"
    return list(bound.values()) if len(bound) == 1 else bound
