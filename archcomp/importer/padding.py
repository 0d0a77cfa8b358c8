"""A padding ``attention_mask`` input: transformers' bidirectional (BERT's) or causal (Llama's)
mask of it, as the attention's ``key_padding_mask``.

transformers turns the (B, T) mask of ones and zeros into the SDPA mask (B, 1, T, T) that lets
query q see key k where ``attention_mask[b, k]`` is nonzero: ``attention_mask.to(bool)`` indexed
at ``[arange(B)[:, None, None, None], arange(T)[None, None, None, :]]``, ``&`` a mask of no
input that holds everywhere (``positions >= 0``), expanded to (B, 1, T, T). That chain is one
node, ``{id: padding_mask, op: eq, in: attention_mask, scalar: 0}`` (True marks a key to ignore,
as ``key_padding_mask`` takes it), and each attention that reads the chain's end takes it as
``in: {query: .., key_padding_mask: padding_mask}``.

A causal decoder's mask (transformers 5's ``create_causal_mask`` / ``sdpa_mask``) is the same
chain with its everywhere-true part replaced by a mask of no input that is causal on the
example (``new_ones & (kv_idx <= q_idx)``; Mistral's sliding window ``& (kv_idx > q_idx - w)``
too), and the indexed padding cast to bool once more: the chain's end is then in
``flat.causal`` (with the window seen, 0 where none hides a key of the example) and its
attention keeps ``causal: true`` (and its config's ``window``, which must agree).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

# ``flat`` below is an archcomp.importer.exported.Flat (exported.py imports the importers)
Flat = Any

_SDPA = "aten.scaled_dot_product_attention.default"
_WHERE = "aten.where.ScalarOther"
_SHAPING = {"aten.expand.default", "aten.unsqueeze.default"}
_AND = {"aten.__and__.Tensor", "aten.bitwise_and.Tensor", "aten.logical_and.default"}
_CASTS = {"aten.to.dtype", "aten.to.dtype_layout", "aten.to.device", "aten._to_copy.default"}
# what the everywhere-true part may compute: ones, positions >= 0, casts and reshapes of them
_TRUE_OPS = {
    "aten.new_ones.default",
    "aten.ones.default",
    "aten.ge.Scalar",
    "aten.arange.default",
    "aten.arange.start",
    "aten.add.Tensor",
    *_AND,
    *_CASTS,
    *_SHAPING,
}


def padding_masks(flat: Flat) -> tuple[dict[fx.Node, fx.Node], dict[fx.Node, fx.Node]]:
    """Every SDPA mask (or eager attention's added mask) that is transformers' padding mask of
    one (B, T) input: each chain's end -> that input, and each call of a chain -> its end. A
    causal chain's window (0: none seen on the example) goes to ``flat.causal`` under the call
    that reads it (the SDPA, or the eager scores' ``add``). Chains of one input are one: the
    later ends pass through to the first (Gemma 2's full and sliding masks share the padding,
    each attention keeps its own window)."""
    ends: dict[fx.Node, fx.Node] = {}
    calls: dict[fx.Node, fx.Node] = {}
    first: dict[fx.Node, fx.Node] = {}  # input -> its first chain's end
    seen: dict[fx.Node, Any] = {}  # each end's chain (or None), once
    later: dict[fx.Node, fx.Node] = {}  # an end -> the first end of its input's chains
    flat.causal = {}
    for n in list(flat.order):
        if str(n.target) == _SDPA:
            end = flat.get(n.args[3] if len(n.args) > 3 else n.kwargs.get("attn_mask"))
            readers = [n]
        elif str(n.target) == _WHERE:  # an eager attention's additive mask (Gemma 2's)
            end = n
            readers = [u for u in flat.users.get(n, []) if str(u.target) == "aten.add.Tensor"]
        else:
            continue
        if not isinstance(end, fx.Node):
            continue
        if end not in seen:
            seen[end] = _additive(flat, end) if end is n else _chain(flat, end)
        chain = seen[end]
        if chain is None:
            continue
        if chain[2] is not None:
            flat.causal.update((r, chain[2]) for r in readers)
        one = first.setdefault(chain[0], end)
        ends.setdefault(one, chain[0])
        calls.update((c, one) for c in chain[1])
        if one is not end:
            later[end] = one
    for end, one in later.items():  # the same padding: read from the first chain's end
        flat.canon[end] = one
        flat.users.setdefault(one, []).extend(flat.users.pop(end, []))
    return ends, calls


def _additive(flat: Flat, end: fx.Node) -> tuple[fx.Node, set[fx.Node], int | None] | None:
    """``where(chain, 0, -big)`` of a causal chain: the float mask an eager attention adds to
    its scores (transformers' ``eager_mask``), as the chain itself."""
    keep, zero, low = end.args[:3]
    chain = _chain(flat, flat.get(keep)) if isinstance(flat.get(keep), fx.Node) else None
    if chain is None or chain[2] is None or not isinstance(low, float) or low > -1e4:
        return None
    from archcomp.importer.recognise_encdec import evaluate

    z = evaluate(flat, zero) if isinstance(zero, fx.Node) else zero
    if not (isinstance(z, int | float) or (isinstance(z, torch.Tensor) and z.numel() == 1)):
        return None
    if float(z) != 0.0:
        return None
    return chain[0], chain[1] | {end}, chain[2]


def _chain(flat: Flat, end: fx.Node) -> tuple[fx.Node, set[fx.Node], int | None] | None:
    """(the input, the calls from it to ``end``, the causal part's window or None) where
    ``end`` is ``input.bool()[b, k] & true`` or ``& causal`` reshaped; None otherwise."""
    calls: set[fx.Node] = set()
    causal: int | None = None  # the causal part's window (0: none seen on the example)
    n = end
    while str(n.target) in _SHAPING:
        calls.add(n)
        n = flat.get(n.args[0])
    index: fx.Node | None = None
    while index is None:
        t = str(n.target)
        if t == "aten.index.Tensor":
            index = n
        elif t in _CASTS and _val(n) is not None and _val(n).dtype == torch.bool:
            calls.add(n)  # the indexed padding cast to bool again (transformers 5's sdpa_mask)
            n = flat.get(n.args[0])
        elif t in _AND and len(n.args) == 2 and causal is None:
            a, b = (flat.get(x) for x in n.args)
            calls.add(n)
            if a in flat.context and _everywhere(flat, a):
                n = b
            elif b in flat.context and _everywhere(flat, b):
                n = a
            elif a in flat.context and (causal := _causal(flat, a)) is not None:
                n = b
            elif b in flat.context and (causal := _causal(flat, b)) is not None:
                n = a
            else:
                return None
        else:
            return None
    calls.add(index)
    found = _indexed_input(flat, index, calls)
    return None if found is None else (*found, causal)


def _causal(flat: Flat, n: fx.Node) -> int | None:
    """A mask of no input, (1 or B, 1, T, T), that is the causal one on the example's sizes
    (keys after the query hidden), or a sliding window of it (Mistral's: keys ``w`` or more
    back hidden too): 0, or ``w``; None for any other mask."""
    from archcomp.importer.recognise_encdec import evaluate

    v = evaluate(flat, n)
    if not isinstance(v, torch.Tensor) or v.dtype != torch.bool or v.dim() != 4:
        return None
    t = v.shape[-1]
    if v.shape[1] != 1 or v.shape[-2] != t or t < 2:
        return None
    back = torch.arange(t)[:, None] - torch.arange(t)[None, :]  # (T, T): how far back key k is
    for w in [0, *range(1, t)]:
        keep = (back >= 0) & ((back < w) if w else True)
        if bool((v == keep).all()):
            return w
    return None


def _indexed_input(
    flat: Flat, index: fx.Node, calls: set[fx.Node]
) -> tuple[fx.Node, set[fx.Node]] | None:
    """``x.bool()[arange(B)[:, None, None, None], arange(T)[None, None, None, :]]`` of an input
    ``x`` (B, T): the input and the calls."""
    src, idx = index.args[0], index.args[1]
    if not isinstance(idx, list | tuple) or len(idx) != 2:
        return None
    if not all(flat.get(i) in flat.context for i in idx):
        return None
    cast = flat.get(src)
    if not isinstance(cast, fx.Node) or str(cast.target) not in _CASTS:
        return None
    x = flat.get(cast.args[0])
    val, out = _val(x), _val(index)
    if x not in flat.inputs or val is None or out is None or val.ndim != 2:
        return None
    if list(out.shape) != [val.shape[0], 1, 1, val.shape[1]] or _val(cast).dtype != torch.bool:
        return None
    if val.dtype.is_floating_point:
        return None  # a float mask of additive scores is another thing
    return x, calls | {cast}


def _everywhere(flat: Flat, n: fx.Node) -> bool:
    """A mask of no input whose calls are ones, ``positions >= 0`` and reshapes (true
    everywhere: transformers' condition that every key takes part)."""
    todo, seen = [n], set()
    while todo:
        x = todo.pop()
        if x in seen:
            continue
        seen.add(x)
        t = str(x.target)
        if t not in _TRUE_OPS or (t == "aten.ge.Scalar" and x.args[1] != 0):
            return False
        args = flat.args_of(x)
        if any(a.op == "placeholder" for a in args):
            return False
        todo.extend(args)
    return True


def _val(n: Any) -> Any:
    v = n.meta.get("val") if isinstance(n, fx.Node) else None
    return v if isinstance(v, torch.Tensor) else None
