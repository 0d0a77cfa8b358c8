"""A module torch.fx cannot trace (``nn.Transformer``: ``if src.is_nested``, shape checks),
read from ``torch.export``'s graph instead, back into its module hierarchy by the same walker as
``--hf`` (:mod:`archcomp.importer.scopes`)."""

from __future__ import annotations

from typing import Any

from archcomp.base.errors import UsageError

Body = dict[str, Any]


def exported_body(
    module: Any,
    inputs: dict[str, Any],
    leading: tuple[tuple[int, str], ...],
    fx_problems: list[str],
) -> tuple[dict[str, Body], Body] | list[str]:
    """The blocks and top-level body of ``module`` called with the keyword ``inputs``, or the
    problems: each call no op expresses, or where torch.export cannot trace it either, torch.fx's
    ``fx_problems`` and export's reason. ``leading``: the first input's leading sizes and their
    names, for the blocks' shape comments."""
    from archcomp.importer.exported import Flat, export_model
    from archcomp.importer.scopes import Walker

    try:
        ep = export_model(module, inputs)
    except UsageError as e:
        return [*fx_problems, str(e)]
    flat = Flat.read(ep, module)
    w = Walker(flat, leading)
    given = list(flat.inputs)
    body = w.body("", given, [flat.inputs[g] for g in given])
    if w.problems or body is None:
        return w.problems
    return w.blocks, body
