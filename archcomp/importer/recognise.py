"""Modules of an exported graph recognised as one archcomp op each: torch.nn leaves, a
transformers RMSNorm (its decomposed pow/mean/rsqrt/mul), an activation module, and an attention
module (q/k/v/o projections, the head split, RoPE, GQA's repeat_kv and
``F.scaled_dot_product_attention``) as ``multi_head_attention`` with its options.

:func:`recognise` gives ``(op, args)``, a reason string when the module is of a recognised kind
but computes something the op cannot, or None for a module that becomes a block.
"""

from __future__ import annotations

import math
from typing import Any

from torch import fx, nn

from archcomp.importer import recognise_encdec as encdec
from archcomp.importer.channels import layer_norm_args
from archcomp.importer.exported import Flat
from archcomp.importer.leaves import leaf_op
from archcomp.importer.rope import rope_options

Op = tuple[str, dict[str, Any]]
_RMS_OPS = {"aten.pow.Tensor_Scalar", "aten.mean.dim", "aten.add.Tensor", "aten.add.Scalar"}
_RMS_OPS |= {"aten.rsqrt.default", "aten.mul.Tensor", "aten.type_as.default"}
_ACTS = {
    "aten.silu.default": "silu",
    "aten.relu.default": "relu",
    "aten.gelu.default": "gelu",
    "aten.tanh.default": "tanh",
    "aten.sigmoid.default": "sigmoid",
}
# What the attention's own level may compute besides its projections: the head split and merge,
# RoPE's rotate-half (mul, slice, neg, cat, add), repeat_kv (unsqueeze, expand, reshape) and SDPA.
_ATTN_OPS = {
    "aten.view.default",
    "aten.reshape.default",
    "aten.transpose.int",
    "aten.unsqueeze.default",
    "aten.expand.default",
    "aten.slice.Tensor",
    "aten.neg.default",
    "aten.cat.default",
    "aten.mul.Tensor",
    "aten.add.Tensor",
    "aten.scaled_dot_product_attention.default",
}
_SDPA = "aten.scaled_dot_product_attention.default"
_PROJ = ("q_proj", "k_proj", "v_proj")
_FUSED = "qkv_proj"  # Phi-3's one (q; k; v) projection, sliced
_PER_HEAD = "query_key_value"  # GPT-NeoX's, q_i, k_i, v_i head by head: viewed, then chunked
_OUTS = ("o_proj", "out_proj", "dense")
_VIEW = "aten.view.default"
_THREE = ((3, -1), (3, 3))  # chunk(3, dim=-1) of a 4-d view
_CHUNK_OPS = {"aten.chunk.default", "<built-in function getitem>"}
_SLICE = "aten.slice.Tensor"


def recognise(flat: Flat, path: str, module: nn.Module, group: list[fx.Node]) -> Op | str | None:
    """The op of the module at ``path`` that ran ``group`` (its calls, its children's too)."""
    kids = dict(module.named_children())
    if not kids and type(module).__module__.startswith("torch.nn"):
        made = leaf_op(module)
        return made if made is not None else "no archcomp op for it"
    if encdec.rms_class(module) and not kids:  # LlamaRMSNorm, T5LayerNorm
        return _rms_norm(flat, module, group)
    if not kids and not any(True for _ in module.parameters()) and len(group) == 1:
        act = _ACTS.get(str(group[0].target))
        if act is not None:
            approx = group[0].kwargs.get("approximate", "none")
            return act, ({"approximate": approx} if approx != "none" else {})
    if isinstance(module, nn.LayerNorm) and not kids and len(group) == 1:  # ConvNeXt's
        args = layer_norm_args(flat, path, module, group[0])
        return ("layer_norm", args) if args is not None else None
    split = all(k in kids for k in _PROJ) or _FUSED in kids or _PER_HEAD in kids
    if split and any(o in kids for o in _OUTS):
        made = _attention(flat, path, module, group)
        ports = encdec.attention_ports(flat, path, group)  # cross-attention
        if ports is not None and not isinstance(made, str):
            made[1]["_ports"] = ports
        return made
    return None


def _rms_norm(flat: Flat, m: nn.Module, group: list[fx.Node]) -> Op | str:
    names = {n for n, _ in m.named_parameters()}
    eps = getattr(m, "variance_epsilon", getattr(m, "eps", None))
    other = sorted({str(n.target) for n in group} - _RMS_OPS)
    if names != {"weight"} or not isinstance(eps, float) or other:
        return f"an RMSNorm computing {', '.join(other) or 'other weights'}"
    args: dict[str, Any] = {"eps": eps}
    weight = [w for w, key in flat.weights.items() if key.endswith(".weight")]
    for n in group:  # Gemma's (1 + weight) gain: the weight itself takes an add
        if str(n.target).startswith("aten.add") and any(flat.get(a) in weight for a in n.args):
            args["offset"] = 1.0
    return "rms_norm", args


def _attention(flat: Flat, path: str, m: nn.Module, group: list[fx.Node]) -> Op | str:
    level = [n for n in group if flat.scope[n][-1] == path]  # its own forward's calls
    level, q_scale = encdec.q_scaling(flat, path, level)  # Whisper, BART: q_proj(x) * scaling
    sdpa = [n for n in level if str(n.target) == _SDPA]
    own = {str(n.target) for n in level}
    kids = set(dict(m.named_children()))
    qk_norm = _qk_norm(flat, path, m, group)
    if isinstance(qk_norm, str):
        return qk_norm
    kids -= {"q_norm", "k_norm"} if qk_norm else set()
    if len(sdpa) != 1:
        return "attention without exactly one F.scaled_dot_product_attention (use 'sdpa')"
    allowed = _ATTN_OPS | (_CHUNK_OPS if _PER_HEAD in kids else set())
    extra = sorted((own - allowed) | (kids - {*_PROJ, _FUSED, _PER_HEAD, *_OUTS}))
    if extra:
        return f"attention that also computes {', '.join(extra)}"
    fused: Any = None
    if _FUSED in kids:
        fused = _fused_slices(flat, path, m, level, sdpa[0])
    elif _PER_HEAD in kids:
        fused = _per_head_chunks(flat, path, m, level, sdpa[0])
    if isinstance(fused, str):
        return fused
    mask = sdpa[0].args[3] if len(sdpa[0].args) > 3 else sdpa[0].kwargs.get("attn_mask")
    padded = sdpa[0] in flat.causal  # an attention_mask's causal padding mask (padding.py)
    if mask is not None and flat.get(mask) not in flat.context and not padded:
        return "an attention mask computed from the input"
    cfg = getattr(m, "config", None)
    opts = _heads(m, cfg)
    if isinstance(opts, str):
        return opts
    d = opts.pop("_d")
    causal = bool(getattr(m, "is_causal", False))
    if padded:
        ports = _padded_ports(flat, path, group, flat.get(mask))
        if isinstance(ports, str) or not causal:
            return (
                ports if isinstance(ports, str) else "a causal padding mask, a non-causal attention"
            )
        opts["_ports"] = ports
        mask = None  # its causal part is the op's causal: true
    windowed = hasattr(m, "sliding_window") or getattr(cfg, "sliding_window", None)
    if not causal and mask is not None and not windowed and encdec.causal_mask(flat, mask):
        causal = True  # CLIP's text tower: a causal mask given to a non-causal attention
    if causal:
        opts["causal"] = True
        window: Any = (
            m.sliding_window
            if hasattr(m, "sliding_window")
            else getattr(cfg, "sliding_window", None)
        )
        if window:
            opts["window"] = int(window)
        if padded and (why := _padded_window(flat, sdpa[0], opts)):
            return why
    elif mask is not None and not encdec.keeps_all(flat, mask):  # BART's encoder: all True
        return "a mask that is not causal"
    rotated = _rotate_half(flat, level)
    if isinstance(rotated, str):
        return rotated
    if rotated:
        rope = rope_options(flat.model, cfg, d, m)  # scaled RoPE, per layer type (rope.py)
        if isinstance(rope, str):
            return rope
        opts["rope"] = rope
    scale = getattr(m, "scaling", None)
    if q_scale is not None:  # the scale the scores get: q's factor times SDPA's own
        scale = q_scale * encdec.sdpa_scale(sdpa[0], d)
    if isinstance(scale, float) and not math.isclose(scale, d**-0.5, rel_tol=1e-9):
        opts["scale"] = scale
    if qk_norm:
        opts["qk_norm"] = qk_norm
    drop = float(getattr(m, "attention_dropout", 0.0) or 0.0)
    if drop:
        opts["dropout"] = drop
    out = next(o for o in _OUTS if hasattr(m, o))
    if out != "out_proj":
        opts["out_name"] = out
    if fused:
        if not isinstance(opts["bias"], bool):
            return f"a fused qkv projection with a bias unlike {out}'s (qkv_name takes one bias)"
        opts["qkv_name"] = _FUSED if _FUSED in kids else _PER_HEAD
        if _PER_HEAD in kids:
            opts["qkv_layout"] = "per_head"
    return "multi_head_attention", opts


def _padded_ports(
    flat: Flat, path: str, group: list[fx.Node], mask: fx.Node
) -> dict[str, fx.Node] | str:
    """``{query: x, key_padding_mask: mask}``: x is what the q (or fused qkv) projection reads."""
    for proj in (_PROJ[0], _FUSED, _PER_HEAD):
        calls = [n for n in group if flat.scope[n][-1] == f"{path}.{proj}"]
        if calls:
            x = {flat.get(c.args[0]) for c in calls if str(c.target) == "aten.linear.default"}
            if len(x) == 1:
                return {"query": x.pop(), "key_padding_mask": mask}
    return "a padded attention whose query projection is not one linear call"


def _padded_window(flat: Flat, reader: fx.Node, opts: dict[str, Any]) -> str | None:
    """Why the sliding window of the causal padding mask ``reader`` reads (as seen on the
    example) is not the op's ``window``; None where they agree (a window as long as the
    example hides nothing)."""
    seen, window = flat.causal[reader], int(opts.get("window", 0))
    t = int(reader.meta["val"].shape[-2])  # the example's length (queries)
    if seen != (window if 0 < window < t else 0):
        return f"a padding mask whose sliding window ({seen or 'none'}) is not the attention's"
    return None


def _heads(m: nn.Module, cfg: Any) -> dict[str, Any] | str:
    """Head counts, head size and biases from the projections and the config (``_d``: the
    head size, also when it is the default)."""
    out: Any = m.get_submodule(next(o for o in _OUTS if hasattr(m, o)))
    fused = next((f for f in (_FUSED, _PER_HEAD) if hasattr(m, f)), None)
    names = (fused,) * 3 if fused else _PROJ
    q, k, v = (m.get_submodule(p) for p in names)
    h = getattr(m, "num_heads", None) or getattr(cfg, "num_attention_heads", None)
    if not isinstance(h, int) or not all(isinstance(p, nn.Linear) for p in (q, k, v, out)):
        return "attention without a config's num_attention_heads or nn.Linear projections"
    kv = h if fused == _PER_HEAD else int(getattr(cfg, "num_key_value_heads", None) or h)
    d = int(getattr(m, "head_dim", 0) or out.in_features // h)
    opts: dict[str, Any] = {"num_heads": h, "_d": d}
    if kv != h:
        opts["num_kv_heads"] = kv
    if d * h != q.in_features:  # type: ignore[operator]
        opts["head_dim"] = d
    biases = [getattr(p, "bias", None) is not None for p in (q, k, v, out)]
    opts["bias"] = (
        biases[0]
        if len(set(biases)) == 1
        else dict(zip(("q", "k", "v", "out"), biases, strict=True))
    )
    return opts


def _fused_slices(
    flat: Flat, path: str, m: nn.Module, level: list[fx.Node], sdpa: fx.Node
) -> bool | str:
    """Whether ``qkv_proj``'s output is sliced, on its last dim, into q, k and v in that order
    (rows ``[0, h d)``, ``[h d, (h + h_kv) d)``, the rest) and each reaches SDPA's own port."""
    cfg = getattr(m, "config", None)
    h, d = getattr(cfg, "num_attention_heads", 0), getattr(m, "head_dim", 0)
    kv = getattr(cfg, "num_key_value_heads", None) or h
    outs = [n for n in flat.order if flat.scope.get(n, ())[-1:] == (f"{path}.{_FUSED}",)]
    made = outs[-1] if outs else None  # (B, T, (h + 2 h_kv) d)
    cuts = [n for n in level if str(n.target) == _SLICE and flat.get(n.args[0]) is made]
    width = (h + 2 * kv) * d
    want = [(0, h * d), (h * d, (h + kv) * d), ((h + kv) * d, width)]
    bounds: list[Any] = [(*n.args[1:], 0, None, None)[:3] for n in cuts]  # (dim, start, end)
    got = [(b[1] or 0, min(b[2] or width, width)) for b in bounds if b[0] in (-1, 2)]
    if sorted(got) != want or len(cuts) != 3:
        return "a fused qkv_proj not sliced into q, k and v (rows q, then k, then v)"
    for port, (lo, hi) in enumerate(want):
        cut = cuts[got.index((lo, hi))]
        if not _reaches(flat, cut, sdpa.args[port], set(cuts), set(level)):
            return f"a fused qkv_proj whose rows from {lo} do not feed SDPA's {'qkv'[port]}"
    return True


def _per_head_chunks(
    flat: Flat, path: str, m: nn.Module, level: list[fx.Node], sdpa: fx.Node
) -> bool | str:
    """Whether ``query_key_value``'s output is viewed as (B, T, h, 3 d), then chunked in three
    on its last dim (after a transpose of T and h at most), piece i reaching SDPA's port i."""
    h = getattr(getattr(m, "config", None), "num_attention_heads", 0)
    outs = [n for n in flat.order if flat.scope.get(n, ())[-1:] == (f"{path}.{_PER_HEAD}",)]
    made = outs[-1] if outs else None  # (B, T, 3 h d)
    views = [
        n for n in level if str(n.target) == "aten.view.default" and flat.get(n.args[0]) is made
    ]
    chunks = [n for n in level if str(n.target) == "aten.chunk.default"]
    width = getattr(made, "meta", {}).get("val")
    if len(views) != 1 or len(chunks) != 1 or width is None:
        return "a fused query_key_value not viewed per head and chunked once"
    shape = list(views[0].args[1])  # type: ignore[arg-type]
    c = chunks[0]
    if shape[-2] not in (h, -1) or shape[-1] * h != width.shape[-1] or c.args[1:] not in _THREE:
        return "a fused query_key_value not viewed as (B, T, h, 3 d) and chunked in three"
    if not _reaches(flat, views[0], c.args[0], {views[0]}, set(level)):
        return "a fused query_key_value whose chunks are not of its per-head view"
    pieces = {u.args[1]: u for u in c.users}
    for port in range(3):
        if port not in pieces or not _reaches(
            flat, pieces[port], sdpa.args[port], set(pieces.values()), set(level)
        ):
            return f"a fused query_key_value whose chunk {port} does not feed SDPA's {'qkv'[port]}"
    return True


def _reaches(flat: Flat, cut: fx.Node, n: Any, cuts: set[fx.Node], inside: set[fx.Node]) -> bool:
    """Whether the value ``n`` comes from ``cut`` and no other slice of the projection (walking
    back through the attention's own calls only)."""
    seen, todo, found = set(), [flat.get(n)], False
    while todo:
        x = todo.pop()
        if not isinstance(x, fx.Node) or x in seen or x not in inside:
            continue
        seen.add(x)
        if x in cuts:
            if x is not cut:
                return False
            found = True
            continue
        todo.extend(flat.args_of(x))
    return found


def _qk_norm(
    flat: Flat, path: str, m: nn.Module, group: list[fx.Node]
) -> dict[str, Any] | str | None:
    """Qwen3's per-head or OLMo-2's whole-projection RMSNorm of q and k (``q_norm``, ``k_norm``)."""
    qn, kn = getattr(m, "q_norm", None), getattr(m, "k_norm", None)
    if qn is None and kn is None:
        return None
    if not (isinstance(qn, nn.Module) and isinstance(kn, nn.Module)):
        return "only one of q_norm and k_norm"
    made: list[Any] = [
        _rms_norm(flat, n, [c for c in group if f"{path}.{k}" in flat.scope[c]])
        for k, n in (("q_norm", qn), ("k_norm", kn))
    ]
    if any(isinstance(x, str) for x in made) or made[0] != made[1]:
        return f"q_norm and k_norm that are not one RMSNorm kind ({made[0]})"
    args = made[0][1]  # type: ignore[index]
    width = qn.weight.shape[0]  # type: ignore[union-attr,index]
    out: dict[str, Any] = {"kind": "rms", "eps": args["eps"]}
    if width != m.head_dim:
        out["per_head"] = False
    if args.get("offset"):
        out["offset"] = args["offset"]
    return out


def _rotate_half(flat: Flat, level: list[fx.Node]) -> bool | str:
    """Whether the attention applies RoPE as rotate-half does to q and k, ``x * cos +
    cat(-x2, x1) * sin``: four muls by a table, two adds of their products, negs and cats;
    a reason where its muls and adds are anything else (a scale of q would be lost)."""
    muls = [n for n in level if str(n.target) == "aten.mul.Tensor"]
    adds = [n for n in level if str(n.target) == "aten.add.Tensor"]
    if not muls and not adds:
        return False
    tables = all(any(a in flat.context for a in flat.args_of(n)) for n in muls)
    sums = all(all(a in muls for a in flat.args_of(n)) for n in adds)
    negs = any(str(n.target) == "aten.neg.default" for n in level)
    if not (tables and sums and negs and len(muls) == 4 and len(adds) == 2):
        return "attention whose muls and adds are not RoPE's rotate-half of q and k"
    return True
