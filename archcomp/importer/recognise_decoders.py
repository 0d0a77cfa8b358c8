"""Modules of the decoder families beyond Llama's, recognised as one archcomp op each.

GPT-2: its ``Conv1D`` (a weight stored (in, out)) as ``linear`` with ``transposed``, its
``NewGELUActivation`` (tanh GELU written out) as ``gelu``, CLIP's ``QuickGELUActivation`` as
``quick_gelu``, and its attention (one ``c_attn``
split in three, SDPA, ``c_proj``) as ``multi_head_attention`` with ``qkv_name: c_attn,
out_name: c_proj, transposed: true``. An ``nn.Embedding`` looked up at the positions 0..T-1
(GPT-2's ``wpe``, BERT's ``position_embeddings``) and added to a value is
``learned_positional_encoding`` on that value (:func:`position_table`, :func:`fold_positions`).
"""

from __future__ import annotations

import operator
from typing import Any

from torch import fx, nn

from archcomp.importer.eager import eager_attention, is_eager, scaled_embedding
from archcomp.importer.exported import Flat
from archcomp.importer.latent import is_latent, latent_attention
from archcomp.importer.moe import is_moe, moe_op

Op = tuple[str, dict[str, Any]]
_SDPA = "aten.scaled_dot_product_attention.default"
_GELU_TANH_OPS = {"aten.mul.Tensor", "aten.pow.Tensor_Scalar", "aten.add.Tensor"}
_GELU_TANH_OPS |= {"aten.tanh.default"}
_QUICK_GELU_OPS = ["aten.mul.Tensor", "aten.sigmoid.default", "aten.mul.Tensor"]
_GPT2_ATTN_OPS = {
    "aten.view.default",
    "aten.reshape.default",
    "aten.transpose.int",
    "aten.split.Tensor",
    str(operator.getitem),
    _SDPA,
}
_ATTN_SPLIT_OPS = {
    "aten.view.default",
    "aten.reshape.default",
    "aten.transpose.int",
    "aten.permute.default",
    _SDPA,
}
_BROADCAST = ("aten.expand.default", "aten.unsqueeze.default")
_GPT2_KIDS = {"c_attn", "c_proj", "attn_dropout", "resid_dropout"}
# how position ids reach the table: arange(T) (+ 0), unsqueezed, expanded, sliced from 0
_POSITION_PATH = {
    "aten.unsqueeze.default",
    "aten.expand.default",
    "aten.view.default",
    "aten.slice.Tensor",
    "aten.add.Tensor",
}


def recognise_family(
    flat: Flat, path: str, module: nn.Module, group: list[fx.Node]
) -> Op | str | None:
    """The op of a module of these families; None where the module is none of them."""
    kind = type(module).__name__
    if kind == "Conv1D" and type(module).__module__.startswith("transformers"):
        w: Any = module.weight
        return "linear", {"out_features": int(w.shape[1]), "transposed": True}
    if kind == "NewGELUActivation":
        other = sorted({str(n.target) for n in group} - _GELU_TANH_OPS)
        tanh: Op = ("gelu", {"approximate": "tanh"})
        return f"a GELU computing {', '.join(other)}" if other else tanh
    if kind == "QuickGELUActivation":  # CLIP's x * sigmoid(1.702 x)
        quick = _quick_gelu(group)
        return ("quick_gelu", {}) if quick else "a quick GELU computing other calls"
    if kind.endswith("ScaledWordEmbedding") and isinstance(module, nn.Embedding):
        return scaled_embedding(module)
    if is_moe(module):
        return moe_op(flat, path, module, group)
    if is_latent(module):
        return latent_attention(flat, path, module, group)
    kids = set(dict(module.named_children()))
    if {"q_proj", "k_proj", "v_proj", "o_proj"} <= kids and is_eager(flat, path, group):
        return eager_attention(flat, path, module, group)
    if {"c_attn", "c_proj"} <= kids:
        return _gpt2_attention(flat, path, module, group, kids)
    if {"query", "key", "value"} <= kids and not kids & {"dense", "o_proj", "out_proj", "o"}:
        return _bert_self_attention(flat, path, module, group, kids)
    return None


def _quick_gelu(group: list[fx.Node]) -> bool:
    """Whether ``group`` is ``x * sigmoid(1.702 * x)``: a mul by the constant, a sigmoid of
    it, and a mul of the input by that."""
    if [str(n.target) for n in group] != _QUICK_GELU_OPS:
        return False
    scaled, sig, out = group
    x = next((a for a in scaled.args if isinstance(a, fx.Node)), None)
    consts = [a for a in scaled.args if isinstance(a, float)]
    return (
        consts == [1.702] and sig.args[0] is scaled and set(out.args) == {x, sig} and x is not None
    )


def _sdpa_of(flat: Flat, path: str, group: list[fx.Node], allowed: set[str]) -> Any:
    """The attention's own calls and its one SDPA call; a reason where it computes more."""
    level = [n for n in group if flat.scope[n][-1] == path]
    extra = sorted({str(n.target) for n in level} - allowed)
    if extra:
        return f"attention that also computes {', '.join(extra)}"
    sdpa = [n for n in level if str(n.target) == _SDPA]
    if len(sdpa) != 1:
        return "attention without exactly one F.scaled_dot_product_attention (use 'sdpa')"
    mask = sdpa[0].args[3] if len(sdpa[0].args) > 3 else sdpa[0].kwargs.get("attn_mask")
    if mask is not None and not _all_true(flat, mask) and flat.get(mask) not in flat.padding:
        return "an attention mask that hides keys (only an unmasked attention is imported)"
    return level, sdpa[0]


def _all_true(flat: Flat, mask: Any) -> bool:
    """Whether ``mask`` is transformers' bidirectional mask of no padding: ``positions >= 0``
    (0..T-1, from no input), unsqueezed and expanded: every key takes part."""
    n = flat.get(mask)
    while isinstance(n, fx.Node) and str(n.target) in (
        "aten.expand.default",
        "aten.unsqueeze.default",
    ):
        n = flat.get(n.args[0])
    if not isinstance(n, fx.Node) or str(n.target) != "aten.ge.Scalar" or n.args[1] != 0:
        return False
    return n in flat.context and _positions(flat, n.args[0])


def _bert_self_attention(
    flat: Flat, path: str, m: nn.Module, group: list[fx.Node], kids: set[str]
) -> Op | str:
    """BERT's self-attention: ``query``, ``key`` and ``value`` projections, heads split, one
    unmasked bidirectional SDPA, heads merged; its output projection is the next module's
    (``output.dense``), so the op has ``out_proj: false``."""
    more = sorted(kids - {"query", "key", "value", "dropout"})
    if more:
        return f"attention that also computes {', '.join(more)}"
    found = _sdpa_of(flat, path, group, _ATTN_SPLIT_OPS)
    if isinstance(found, str):
        return found
    _, sdpa = found
    mask = flat.get(sdpa.args[3] if len(sdpa.args) > 3 else sdpa.kwargs.get("attn_mask"))
    decoder = getattr(m, "is_causal", False) or getattr(m, "is_decoder", False)
    if decoder and flat.causal.get(sdpa) != 0:  # a causal padding mask, no window (padding.py)
        return "a causal (decoder) BERT attention without a causal padding attention_mask"
    projs: list[Any] = [m.get_submodule(k) for k in ("query", "key", "value")]
    if not all(isinstance(p, nn.Linear) for p in projs):
        return "attention whose query, key and value are not nn.Linear"
    cfg = getattr(m, "config", None)
    h = int(getattr(cfg, "num_attention_heads", 0) or getattr(m, "num_attention_heads", 0))
    d = int(getattr(m, "attention_head_size", 0) or projs[0].out_features // h)
    opts: dict[str, Any] = {"num_heads": h}
    biases = [p.bias is not None for p in projs]
    if not all(biases):
        opts["bias"] = dict(zip(("q", "k", "v", "out"), (*biases, False), strict=True))
    if h * d != projs[0].in_features:
        opts["head_dim"] = d
    scale = sdpa.kwargs.get("scale")
    if isinstance(scale, float) and abs(scale - d**-0.5) > 1e-12 * scale:
        opts["scale"] = scale
    drop = float(getattr(getattr(m, "dropout", None), "p", 0.0) or 0.0)
    if drop:
        opts["dropout"] = drop
    if sdpa in flat.causal:  # a decoder BERT's: the padding and-ed with the causal mask
        opts["causal"] = True
    if mask in flat.padding:  # the keys an attention_mask hides (archcomp/importer/padding.py)
        query = [n for n in group if flat.scope[n][-1] == f"{path}.query"]
        if len(query) != 1:
            return "a padded attention whose query is not one call"
        opts["_ports"] = {"query": flat.get(query[0].args[0]), "key_padding_mask": mask}
    return "multi_head_attention", opts | {
        "q_name": "query",
        "k_name": "key",
        "v_name": "value",
        "out_proj": False,
    }


def _gpt2_attention(
    flat: Flat, path: str, m: nn.Module, group: list[fx.Node], kids: set[str]
) -> Op | str:
    """GPT-2's self-attention: ``c_attn(x).split(E, dim=2)`` into q, k and v (each reaching
    SDPA's own port), heads split, one SDPA with a causal mask, heads merged, ``c_proj``."""
    from archcomp.importer.recognise import _reaches

    level = [n for n in group if flat.scope[n][-1] == path]
    own = {str(n.target) for n in level}
    extra = sorted((own - _GPT2_ATTN_OPS) | (kids - _GPT2_KIDS))
    if extra:
        return f"attention that also computes {', '.join(extra)}"
    cfg = getattr(m, "config", None)
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
        return "scale_attn_by_inverse_layer_idx (a score scale that differs between layers)"
    sdpa = [n for n in level if str(n.target) == _SDPA]
    splits = [n for n in level if str(n.target) == "aten.split.Tensor"]
    if len(sdpa) != 1 or len(splits) != 1:
        return "attention without one c_attn split and one F.scaled_dot_product_attention"
    made = [n for n in flat.order if flat.scope.get(n, ())[-1:] == (f"{path}.c_attn",)]
    cut, e = splits[0], int(getattr(m, "embed_dim", 0))
    size, dim = (*cut.args[1:], 0)[:2]
    if not made or flat.get(cut.args[0]) is not made[-1] or size != e or dim not in (2, -1):
        return "a c_attn not split into q, k and v of embed_dim each on its last dim"
    pieces = {u.args[1]: u for u in cut.users if u.target is operator.getitem}
    for port in range(3):
        if port not in pieces or not _reaches(
            flat, pieces[port], sdpa[0].args[port], set(pieces.values()), set(level)
        ):
            return f"a c_attn whose piece {port} does not feed SDPA's {'qkv'[port]}"
    mask = sdpa[0].args[3] if len(sdpa[0].args) > 3 else sdpa[0].kwargs.get("attn_mask")
    padded = flat.causal.get(sdpa[0]) == 0  # an attention_mask's causal mask (padding.py)
    if mask is not None and flat.get(mask) not in flat.context and not padded:
        return "an attention mask computed from the input"
    if not getattr(m, "is_causal", False):
        return "attention that is not causal"
    h = getattr(cfg, "num_attention_heads", 0)
    opts: dict[str, Any] = {"num_heads": h, "causal": True}
    if padded:  # the key_padding_mask port beside the query, c_attn's one input
        x = [a for a in flat.args_of(made[0]) if a not in flat.weights]
        if len(x) != 1:
            return "a padded attention whose c_attn reads more than one input"
        opts["_ports"] = {"query": x[0], "key_padding_mask": flat.get(mask)}
    scale = sdpa[0].kwargs.get("scale")
    if isinstance(scale, float) and abs(scale - (e // h) ** -0.5) > 1e-12 * scale:
        opts["scale"] = scale
    drop = float(getattr(getattr(m, "attn_dropout", None), "p", 0.0) or 0.0)
    if drop:
        opts["dropout"] = drop
    return "multi_head_attention", opts | {
        "out_name": "c_proj",
        "qkv_name": "c_attn",
        "transposed": True,
    }


def position_table(flat: Flat, m: nn.Module, group: list[fx.Node]) -> dict[str, Any] | None:
    """``{max_len}`` where ``m`` is an ``nn.Embedding`` looked up at the positions 0..T-1 only
    (``arange`` from 0, or transformers' ``position_ids`` buffer sliced from 0)."""
    look = [n for n in group if str(n.target) == "aten.embedding.default"]
    if not isinstance(m, nn.Embedding) or len(look) != 1:
        return None
    return {"max_len": m.num_embeddings} if _positions(flat, look[0].args[1]) else None


def _positions(flat: Flat, n: Any) -> bool:
    """Whether ``n`` is 0..T-1 along the input's sequence (walking back through reshapes)."""
    n = flat.get(n)
    while isinstance(n, fx.Node):
        t = str(n.target)
        if n in flat.weights:  # BERT's position_ids buffer, arange(max_len)
            return flat.weights[n].endswith("position_ids")
        if t in ("aten.arange.default", "aten.arange.start"):
            start = n.args[0] if t == "aten.arange.start" else 0
            step = n.kwargs.get("step", n.args[2] if len(n.args) > 2 else 1)
            return bool(start == 0 and step in (1, None))
        if t not in _POSITION_PATH:
            return False
        if t == "aten.add.Tensor" and n.args[1] != 0:
            return False
        if t == "aten.slice.Tensor" and (n.args[2] if len(n.args) > 2 else 0) not in (0, None):
            return False
        n = flat.get(n.args[0])
    return False


def fold_positions(items: list[Any], w: Any) -> list[Any]:
    """A position table (an item of no input) and the ``add`` that adds it to a value: one
    ``learned_positional_encoding`` of that value, where the add was (``w``: the walker)."""
    out, flat = list(items), w.flat
    for pos in [i for i in items if i.op == "learned_positional_encoding" and not i.ins]:
        adds = [i for i in out if i.op == "add" and len(i.ins) == 2 and pos.outs[0] in i.ins]
        if len(adds) != 1 or len(flat.users.get(pos.outs[0], [])) != 1:
            first = min(pos.calls, key=flat.order.index)
            w.fail(first, f"self.{pos.id}", "a position table not added to one value once")
            continue
        add = adds[0]
        pos.ins = [x for x in add.ins if x is not pos.outs[0]]
        pos.outs, pos.calls = add.outs, pos.calls | add.calls
        out.remove(pos)
        out[out.index(add)] = pos
    return out


def own_call(flat: Flat, n: fx.Node) -> tuple[str, list[fx.Node], dict[str, Any]] | None:
    """A module's own aten call these families add: ``x[:, 0]`` (``aten.select.int``, BERT's
    pooler) as ``index``. None for any other call."""
    if str(n.target) == "aten.select.int":
        x, dim, i = n.args[:3]
        rank = getattr(getattr(x, "meta", {}).get("val"), "ndim", 0)
        if isinstance(x, fx.Node) and isinstance(dim, int) and isinstance(i, int):
            at = ", ".join([":"] * (dim % rank) + [str(i)]) if rank else str(i)
            return "index", [flat.get(x)], {"at": f"[{at}]"}
    return None
