"""``torch.nn.MultiheadAttention`` of an exported graph as one ``multi_head_attention`` node with
``in_proj: true`` (its packed ``in_proj_weight`` and ``in_proj_bias`` load by their own keys).

torch's forward projects q, k and v with one, two or three ``linear`` calls on rows of
``in_proj_weight`` (one for self-attention, q then k-and-v where key is value, else q, k, v),
each on its input transposed to sequence-first; which input feeds which call gives the node's
ports. ``need_weights`` either way: the weights it may return must not be read. A bool
key_padding_mask is its port; an attn_mask causal on the example (computed from no input, or
an input given so) is ``causal: true``, any other (T, S) one the ``mask`` port
(:mod:`archcomp.importer.masks`, docs/import.md#attention-masks).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from archcomp.importer import recognise_encdec as encdec
from archcomp.importer.exported import Flat
from archcomp.importer.masks import causal_values

_LINEAR = "aten.linear.default"
_SDPA = "aten.scaled_dot_product_attention.default"
_THROUGH = {"aten.transpose.int", "aten.permute.default"}  # batch-first -> sequence-first


def torch_mha(
    flat: Flat, m: nn.MultiheadAttention, group: list[fx.Node]
) -> tuple[str, dict[str, Any]] | str:
    """``("multi_head_attention", opts)`` (``opts["_ports"]``: query, key, value and masks where
    they are not one input; ``opts["_invert_mask"]``: a bool attn_mask, True where torch hides a
    key), or why the module cannot be that op."""
    if not m._qkv_same_embed_dim:
        return "kdim or vdim unlike embed_dim (separate q/k/v_proj_weight): not imported yet"
    if m.bias_k is not None or m.add_zero_attn:
        return "add_bias_kv or add_zero_attn: no multi_head_attention option for them"
    if (m.in_proj_bias is None) != (m.out_proj.bias is None):
        return "in_proj and out_proj biases that differ"
    inside = set(group)
    ins = [a for n in group for a in flat.args_of(n) if a not in inside and a not in flat.weights]
    ins = list(dict.fromkeys(ins))  # each once, in first use
    ports = _ports(flat, group, ins)
    if isinstance(ports, str):
        return ports
    opts: dict[str, Any] = {"num_heads": m.num_heads, "in_proj": True}
    if not m.batch_first:
        opts["batch_first"] = False  # (T, B, E), torch's default
    if m.in_proj_bias is None:
        opts["bias"] = False
    causal = ports.pop("_causal", None)
    if causal is not None:
        opts["causal"] = True
    if ports.pop("_invert", None):
        opts["_invert_mask"] = True  # scopes.py: a logical_not node before the attention
    sdpa = [n for n in group if str(n.target) == _SDPA]
    if sdpa and (sdpa[0].kwargs.get("is_causal") or (len(sdpa[0].args) > 5 and sdpa[0].args[5])):
        opts["causal"] = True
    if m.dropout:
        opts["dropout"] = float(m.dropout)
    if len(set(ports.values())) > 1:
        opts["_ports"] = ports
    return "multi_head_attention", opts


def _ports(flat: Flat, group: list[fx.Node], ins: list[fx.Node]) -> dict[str, Any] | str:
    """query, key and value: the inputs the in-projection calls read, in torch's order."""
    out_w = {n for n, key in flat.weights.items() if key.endswith("out_proj.weight")}
    proj = [
        n
        for n in group
        if str(n.target) == _LINEAR and not any(flat.get(a) in out_w for a in n.args[1:2])
    ]
    sources = [_source(flat, p.args[0], set(group)) for p in proj]
    if len(proj) not in (1, 2, 3) or any(s is None for s in sources):
        return "a MultiheadAttention whose projections are not torch's in_proj calls"
    names = {1: ("query",) * 3, 2: ("query", "key", "key"), 3: ("query", "key", "value")}
    got = dict(zip(("query", "key", "value"), names[len(proj)], strict=True))
    by_port = dict(zip(("query", "key", "value")[: len(proj)], sources, strict=True))
    ports = {p: by_port[got[p]] for p in got}
    extras = [a for a in ins if a not in ports.values()]
    pads = [a for a in extras if _padding(flat, a, group)]
    masks = [a for a in extras if a not in pads]
    if len(pads) > 1 or len(masks) > 1 or (not extras and _masked(group)):
        return "masks other than one attn_mask and one bool key_padding_mask"
    if pads:
        ports = ports | {"key_padding_mask": pads[0]}
    if masks:
        return _attn_mask(flat, masks[0], ports)
    return ports


def _attn_mask(flat: Flat, mask: fx.Node, ports: dict[str, Any]) -> dict[str, Any] | str:
    """The ports with the attn_mask: none and ``_causal`` where it is causal on the example
    (computed from no input, or an input given so), the ``mask`` port otherwise (a bool one
    through ``_invert``: torch hides True, the op keeps it)."""
    name = flat.inputs.get(mask)
    value = encdec.evaluate(flat, mask) if mask in flat.context else flat.examples.get(name or "")
    if causal_values(value):
        return ports | {"_causal": mask}  # read by no node: by_export.py drops such an input
    if mask in flat.context:
        if encdec.keeps_all(flat, mask):
            return ports
        return "an attn_mask computed from no input that is not causal on the example's sizes"
    val = mask.meta.get("val")
    if (
        not isinstance(val, torch.Tensor)
        or val.ndim not in (2, 3)
        or (val.ndim == 3 and val.shape[0] != 1)
    ):
        shape = tuple(getattr(val, "shape", ()))
        return f"an attn_mask of shape {shape}: (T, S) or (1, T, S) only (one mask for every head)"
    if val.dtype == torch.bool:
        return ports | {"mask": mask, "_invert": True}
    if not val.dtype.is_floating_point:
        return f"an attn_mask of dtype {val.dtype}: float (added) or bool (True hides) only"
    return ports | {"mask": mask}


def _padding(flat: Flat, mask: fx.Node, group: list[fx.Node]) -> bool:
    """Whether ``mask`` is a bool key_padding_mask (B, S): torch views it as (B, 1, 1, S)."""
    val = mask.meta.get("val")
    if not isinstance(val, torch.Tensor) or val.dtype is not torch.bool or val.ndim != 2:
        return False
    inside, todo, seen = set(group), [mask], set()
    while todo:
        n = todo.pop()
        for u in flat.users.get(n, []):
            if u in inside and u not in seen:
                seen.add(u)
                shape = u.args[1] if str(u.target) == "aten.view.default" else None
                if isinstance(shape, list | tuple) and len(shape) == 4:
                    return bool(list(shape[1:3]) == [1, 1] and shape[3] == val.shape[1])
                todo.append(u)
    return False


def _source(flat: Flat, n: Any, inside: set[fx.Node]) -> fx.Node | None:
    """The input outside the module that ``n`` is, through transposes."""
    x = flat.get(n)
    while isinstance(x, fx.Node) and x in inside and str(x.target) in _THROUGH:
        x = flat.get(x.args[0])
    return x if isinstance(x, fx.Node) and x not in inside else None


def _masked(group: list[fx.Node]) -> bool:
    """Whether the scores take a mask: SDPA's attn_mask, or baddbmm on the weights' path."""
    for n in group:
        if str(n.target) == "aten.baddbmm.default":
            return True
        if str(n.target) == _SDPA:
            mask = n.args[3] if len(n.args) > 3 else n.kwargs.get("attn_mask")
            if mask is not None:
                return True
    return False
