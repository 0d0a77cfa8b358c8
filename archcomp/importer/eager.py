"""Gemma's pieces of an exported graph: its scaled word embedding as ``embedding`` with
``scale``, and an attention that writes its scores out (Gemma 2's eager, soft-capped one) as
``multi_head_attention`` with ``scale`` and ``softcap``."""

from __future__ import annotations

from typing import Any

from torch import fx, nn

from archcomp.importer.exported import Flat
from archcomp.importer.rope import rope_options

Op = tuple[str, dict[str, Any]]
_SDPA = "aten.scaled_dot_product_attention.default"


def scaled_embedding(m: nn.Embedding) -> Op | str:
    """Gemma's embedding times ``embed_scale``: ``embedding`` with ``scale`` where that is
    sqrt(embedding_dim), the only factor the op has."""
    factor = getattr(m, "scalar_embed_scale", None)
    if not isinstance(factor, float) or abs(factor - m.embedding_dim**0.5) > 1e-9 * factor:
        return f"an embedding scaled by {factor!r}, not sqrt(embedding_dim)"
    args: dict[str, Any] = {"num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim}
    if m.padding_idx is not None:
        args["padding_idx"] = m.padding_idx
    return "embedding", args | {"scale": True}


_MATMUL = "aten.matmul.default"


def is_eager(flat: Flat, path: str, group: list[fx.Node]) -> bool:
    """Whether the attention at ``path`` computes its scores itself (two matmuls, no SDPA)."""
    own = [str(n.target) for n in group if flat.scope[n][-1] == path]
    return own.count(_MATMUL) == 2 and _SDPA not in own


def _score_chain(flat: Flat, scores: fx.Node) -> tuple[list[fx.Node], dict[str, Any]] | str:
    """The calls from ``q @ k^T`` to the softmax: an optional ``* scale``, an optional soft cap
    (``/ c``, ``tanh``, ``* c``), ``+ mask`` (a mask of no input), ``softmax(-1)``."""
    chain: list[fx.Node] = [scores]
    opts: dict[str, Any] = {}

    def step(target: str) -> fx.Node | None:
        users = flat.users.get(chain[-1], [])
        nxt = users[0] if len(users) == 1 and str(users[0].target) == target else None
        if nxt is not None:
            chain.append(nxt)
        return nxt

    scaled = step("aten.mul.Tensor")
    if scaled is not None:
        opts["scale"] = scaled.args[1]
    div = step("aten.div.Tensor")
    if div is not None:
        cap = div.args[1]
        if step("aten.tanh.default") is None or (m := step("aten.mul.Tensor")) is None:
            return "scores divided but not soft-capped (/ c, tanh, * c)"
        if m.args[1] != cap:
            return "a soft cap of scores whose two factors differ"
        opts["softcap"] = cap
    add = step("aten.add.Tensor")
    masks = [a for a in flat.args_of(add) if a not in chain] if add is not None else []
    padded = add is not None and add in flat.causal and len(masks) == 1  # padding.py's
    if not padded and any(a not in flat.context for a in masks):
        return "scores plus a mask computed from the input"
    if padded:
        opts["_padding"] = add
    soft = step("aten.softmax.int")
    if soft is None or soft.args[1] not in (-1, 3):
        return "scores not followed by a softmax over the keys"
    if not all(isinstance(v, float) for k, v in opts.items() if k != "_padding"):
        return "scores scaled or capped by a tensor"
    return chain, opts


def eager_attention(flat: Flat, path: str, m: nn.Module, group: list[fx.Node]) -> Op | str:
    """An attention written out (Gemma 2's soft-capped eager attention): q/k/v projections,
    the head split, RoPE's rotate-half, repeat_kv, ``softmax(cap(q k^T * scale) + mask) v``,
    heads merged, ``o_proj``, as ``multi_head_attention`` with ``scale`` and ``softcap``."""
    from archcomp.importer import recognise as r

    level = [n for n in group if flat.scope[n][-1] == path]
    mm = [n for n in level if str(n.target) == _MATMUL]
    found = _score_chain(flat, mm[0])
    if isinstance(found, str):
        return found
    chain, score_opts = found
    if flat.get(mm[1].args[0]) is not chain[-1]:
        return "attention weights that are not the softmax of its scores"
    rest = [n for n in level if n not in chain and n is not mm[1]]
    extra = sorted({str(n.target) for n in rest} - r._ATTN_OPS - {_SDPA})
    kids = set(dict(m.named_children())) - {*r._PROJ, "o_proj"}
    if extra or kids:
        return f"attention that also computes {', '.join(extra + sorted(kids))}"
    cfg = getattr(m, "config", None)
    opts = r._heads(m, cfg)
    if isinstance(opts, str):
        return opts
    d = opts.pop("_d")
    if not getattr(m, "is_causal", False):
        return "an eager attention that is not causal"
    opts["causal"] = True
    window = getattr(m, "sliding_window", None)
    if window:
        opts["window"] = int(window)
    rotated = r._rotate_half(flat, rest)
    if isinstance(rotated, str):
        return rotated
    if rotated:
        rope = rope_options(flat.model, cfg, d, m)
        if isinstance(rope, str):
            return rope
        opts["rope"] = rope
    scale = score_opts.get("scale", 1.0)
    if abs(scale - d**-0.5) > 1e-9 * scale:
        opts["scale"] = scale
    if "softcap" in score_opts:
        opts["softcap"] = score_opts["softcap"]
    if "_padding" in score_opts:  # the attention_mask's causal padding mask, added
        add = score_opts["_padding"]
        mask = next(a for a in flat.args_of(add) if a in flat.padding)
        ports = r._padded_ports(flat, path, group, mask)
        why = ports if isinstance(ports, str) else r._padded_window(flat, add, opts)
        if why:
            return why
        opts["_ports"] = ports
    drop = float(getattr(m, "attention_dropout", 0.0) or 0.0)
    if drop:
        opts["dropout"] = drop
    return "multi_head_attention", opts | {"out_name": "o_proj"}
