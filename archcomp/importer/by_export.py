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
    flags: dict[str, Any] | None = None,
) -> tuple[dict[str, Body], Body] | list[str]:
    """The blocks and top-level body of ``module`` called with the keyword ``inputs``, or the
    problems: each call no op expresses, or where torch.export cannot trace it either, torch.fx's
    ``fx_problems`` and export's reason. ``leading``: the first input's leading sizes and their
    names, for the blocks' shape comments; ``flags``: non-tensor arguments, traced as constants.
    torch's causal-mask detection answers as on the example (:mod:`archcomp.importer.masks`);
    an input read by no call that is a causal mask on the example is left out of the body."""
    from archcomp.importer.exported import Flat, export_model
    from archcomp.importer.masks import fold_float_padding, pinned_causal_detection
    from archcomp.importer.scopes import Walker

    seen: set[int] = set()
    inputs = {  # one tensor given twice (src_ and memory_key_padding_mask): export reads one
        k: v.clone() if id(v) in seen or seen.add(id(v)) else v  # type: ignore[func-returns-value]
        for k, v in inputs.items()
    }
    kwargs = inputs | (flags or {})
    try:
        with pinned_causal_detection(module, kwargs):
            ep = export_model(module, kwargs)
    except UsageError as e:
        return [*fx_problems, str(e)]
    flat = Flat.read(ep, module)
    flat.examples = dict(inputs)
    fold_float_padding(flat)  # nn.TransformerEncoder's float copy of src_key_padding_mask
    flat.unread = {g for g in flat.inputs if _causal_input(flat, g)}
    w = Walker(flat, leading)
    given = [g for g in flat.inputs if g not in flat.unread]
    unread = [flat.inputs[g] for g in given if not flat.users.get(g)]
    if unread:  # attn_mask with is_causal=True: torch ignores the mask on that path
        return [
            f"input {name!r} is read by no call of the traced forward, so no node would read "
            "it (torch ignores an attn_mask given with is_causal=True on this path: pass a mask "
            "causal on the example, or no hint)"
            for name in unread
        ]
    body = w.body("", given, [flat.inputs[g] for g in given])
    if w.problems or body is None:
        return w.problems
    return w.blocks, body


def _causal_input(flat: Any, g: Any) -> bool:
    """Whether input ``g`` is a causal mask on the example that only nn.MultiheadAttention
    reads (each then ``causal: true``), or none (torch took it for ``is_causal``)."""
    from archcomp.importer.masks import causal_values, in_mha

    if not causal_values(flat.examples.get(flat.inputs[g])):
        return False
    return all(in_mha(flat, u) for u in flat.users.get(g, []))
