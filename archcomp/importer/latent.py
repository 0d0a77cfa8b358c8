"""DeepSeek's multi-head latent attention (``DeepseekV3Attention``, V2's too) recognised as
archcomp's ``multi_head_latent_attention``: the query through its latent (``q_a_proj``,
``q_a_layernorm``, ``q_b_proj``) or one ``q_proj``, the joint key/value latent
(``kv_a_proj_with_mqa`` split into the latent and the shared RoPE key, ``kv_a_layernorm``,
``kv_b_proj`` split per head into the keys and values), RoPE of interleaved pairs (or
rotate-half) on the decoupled head, the shared key expanded to every head, one SDPA, ``o_proj``.
The splits' sizes, the RoPE layout and SDPA's inputs are read from the calls: a module that
computes anything else is refused with the calls it adds.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from torch import fx, nn

from archcomp.importer.exported import Flat
from archcomp.importer.rope import rope_options

Op = tuple[str, dict[str, Any]]
_SDPA = "aten.scaled_dot_product_attention.default"
_SPLIT = "aten.split_with_sizes.default"
_OPS = {
    "aten.view.default",
    "aten.reshape.default",
    "aten.transpose.int",
    _SPLIT,
    str(operator.getitem),
    "aten.slice.Tensor",
    "aten.unsqueeze.default",
    "aten.mul.Tensor",
    "aten.sub.Tensor",
    "aten.add.Tensor",
    "aten.neg.default",
    "aten.cat.default",
    "aten.expand.default",
    "aten.new_empty.default",
    "aten.copy_.default",
    _SDPA,
}
_KV = {"kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "o_proj"}
_Q_LATENT = {"q_a_proj", "q_a_layernorm", "q_b_proj"}


def is_latent(module: nn.Module) -> bool:
    kids = set(dict(module.named_children()))
    return kids >= _KV and (kids >= _Q_LATENT or "q_proj" in kids)


def latent_attention(flat: Flat, path: str, m: nn.Module, group: list[fx.Node]) -> Op | str:
    """``multi_head_latent_attention`` with its options; a reason where the module computes
    more, or other than, DeepSeek's latent attention."""
    kids = set(dict(m.named_children()))
    q_latent = kids >= _Q_LATENT
    extra_kids = sorted(kids - _KV - (_Q_LATENT if q_latent else {"q_proj"}))
    # its own calls, those no output reads too: the rotated shared key reaches SDPA only by an
    # in-place copy_ into the keys (expand_kv), which the walk back from the outputs misses
    level = [
        n for n in flat.order if flat.scope.get(n, ())[-1:] == (path,) and n not in flat.context
    ]
    extra = sorted({str(n.target) for n in level} - _OPS)
    if extra or extra_kids:
        return f"latent attention that also computes {', '.join(extra + extra_kids)}"
    sizes = _sizes(m)
    if isinstance(sizes, str):
        return sizes
    h, r_q, r_kv, d_nope, d_rope, d_v = sizes
    sdpa = _sdpa(flat, level, sizes)
    if isinstance(sdpa, str):
        return sdpa
    cfg = getattr(m, "config", None)
    interleaved = _interleaved(flat, level)
    if isinstance(interleaved, str):
        return interleaved
    if interleaved != bool(getattr(cfg, "rope_interleave", interleaved)):
        return "a RoPE layout unlike the config's rope_interleave"
    rope = rope_options(flat.model, cfg, d_rope, m)
    if isinstance(rope, str):
        return rope
    rope.pop("rotary_dim", None)
    if interleaved:
        rope["interleaved"] = True
    eps = _norm_eps(flat, path, m, group)
    if isinstance(eps, str):
        return eps
    opts: dict[str, Any] = {"num_heads": h}
    if q_latent:
        opts["q_lora_rank"] = r_q
    opts |= {"kv_lora_rank": r_kv, "qk_nope_head_dim": d_nope, "qk_rope_head_dim": d_rope}
    opts |= {"v_head_dim": d_v, "rope": rope, "norm_eps": eps}
    bias = _bias(m, q_latent)
    if isinstance(bias, str):
        return bias
    if bias:
        opts["bias"] = True
    if getattr(m, "is_causal", False):
        opts["causal"] = True
    else:
        return "latent attention that is not causal"
    scale = _scale(m, sdpa, opts)
    if scale is not None:
        opts["scale"] = scale
    drop = float(getattr(m, "attention_dropout", 0.0) or 0.0)
    if drop:
        opts["dropout"] = drop
    return "multi_head_latent_attention", opts


def _sdpa(flat: Flat, level: list[fx.Node], sizes: tuple[int, ...]) -> fx.Node | str:
    """The one SDPA call, its mask causal (of no input), its key and value kv_b_proj's, after
    the three splits of DeepSeek's sizes; a reason where any of these is otherwise."""
    _, _, r_kv, d_nope, d_rope, d_v = sizes
    splits = sorted(
        [list(n.args[1]) for n in level if str(n.target) == _SPLIT]  # type: ignore[arg-type]
    )
    if splits != sorted([[d_nope, d_rope], [r_kv, d_rope], [d_nope, d_v]]):
        return f"latent attention whose splits are {splits}, not q's, the latent's and kv's"
    sdpa = [n for n in level if str(n.target) == _SDPA]
    if len(sdpa) != 1:
        return "latent attention without exactly one F.scaled_dot_product_attention"
    mask = sdpa[0].args[3] if len(sdpa[0].args) > 3 else sdpa[0].kwargs.get("attn_mask")
    if mask is not None and flat.get(mask) not in flat.context:
        return "an attention mask computed from the input"
    if not _value_of_kv_b(flat, sdpa[0], level, d_nope):
        return "latent attention whose values are not kv_b_proj's last v_head_dim per head"
    if not _key_of(flat, sdpa[0], level, d_nope):
        return "latent attention whose keys are not kv_b_proj's keys beside the shared RoPE key"
    return sdpa[0]


def _norm_eps(flat: Flat, path: str, m: nn.Module, group: list[fx.Node]) -> float | str:
    """The one eps of the latent RMSNorms (``q_a_layernorm`` where there is one,
    ``kv_a_layernorm``); a reason where they are not plain RMSNorms of one eps."""
    from archcomp.importer.recognise import _rms_norm

    kids = dict(m.named_children())
    norms = [
        _rms_norm(flat, kids[k], [c for c in group if f"{path}.{k}" in flat.scope[c]])
        for k in ("q_a_layernorm", "kv_a_layernorm")
        if k in kids
    ]
    eps = {n[1].get("eps") if isinstance(n, tuple) else n for n in norms}
    if len(eps) != 1 or any(isinstance(n, str) or n[1].get("offset") for n in norms):
        return f"latent norms that are not plain RMSNorms of one eps ({sorted(map(str, eps))})"
    return float(eps.pop())  # type: ignore[arg-type]


def _sizes(m: nn.Module) -> tuple[int, int, int, int, int, int] | str:
    """h, q_lora_rank (0 without), kv_lora_rank, qk_nope, qk_rope and v head dims."""
    names = ("num_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
    vals = [getattr(m, k, None) for k in names]
    if not all(isinstance(v, int) and v > 0 for v in vals):
        return "latent attention without its sizes (num_heads, kv_lora_rank, ... head dims)"
    h, r_kv, d_nope, d_rope, d_v = (int(v) for v in vals)  # type: ignore[arg-type]
    r_q = int(getattr(m, "q_lora_rank", 0) or 0)
    return h, r_q, r_kv, d_nope, d_rope, d_v


def _bias(m: nn.Module, q_latent: bool) -> bool | str:
    """DeepSeek's attention_bias: biases on q_a_proj, kv_a_proj_with_mqa and o_proj, or none."""
    with_bias = ["kv_a_proj_with_mqa", "o_proj"] + (["q_a_proj"] if q_latent else [])
    without = ["kv_b_proj"] + (["q_b_proj"] if q_latent else ["q_proj"])
    projs = {k: m.get_submodule(k) for k in with_bias + without}
    if not all(isinstance(p, nn.Linear) for p in projs.values()):
        return "latent attention whose projections are not nn.Linear"
    has = {k: getattr(p, "bias", None) is not None for k, p in projs.items()}
    if any(has[k] for k in without) or len({has[k] for k in with_bias}) != 1:
        return "latent attention with biases other than attention_bias's"
    return has["o_proj"]


def _interleaved(flat: Flat, level: list[fx.Node]) -> bool | str:
    """True where RoPE rotates adjacent pairs (slices of step 2: eight muls by a table, two
    subs and two adds of them), False for rotate-half (a neg each of q and k; four muls, two
    adds); a reason where the arithmetic is anything else (a scale of q would be lost)."""
    steps = [n for n in level if str(n.target) == "aten.slice.Tensor" and n.args[4:5] == (2,)]
    negs = [n for n in level if str(n.target) == "aten.neg.default"]
    muls = [n for n in level if str(n.target) == "aten.mul.Tensor"]
    sums = [n for n in level if str(n.target) in ("aten.add.Tensor", "aten.sub.Tensor")]
    subs = [n for n in sums if str(n.target) == "aten.sub.Tensor"]
    other = [n for n in muls if sum(a in flat.context for a in flat.args_of(n)) != 1]
    if other:  # not RoPE's product of a value and a cos or sin table
        return f"latent attention that also computes {other[0].target} at {flat.source(other[0])}"
    of_muls = all(len(n.args) == 2 and all(a in muls for a in flat.args_of(n)) for n in sums)
    want = (8, 2, 2, 0) if steps else (4, 0, 2, 2)
    if not of_muls or (len(muls), len(subs), len(sums) - len(subs), len(negs)) != want:
        return "latent attention whose RoPE is neither interleaved pairs nor rotate-half of q, k"
    return bool(steps)


def _value_of_kv_b(flat: Flat, sdpa: fx.Node, level: list[fx.Node], d_nope: int) -> bool:
    """Whether SDPA's value is piece 1 of the per-head split of kv_b_proj's output."""
    v = flat.get(sdpa.args[2])
    if not (isinstance(v, fx.Node) and v.target is operator.getitem and v.args[1] == 1):
        return False
    cut = flat.get(v.args[0])
    return cut in level and list(cut.args[1])[:1] == [d_nope]  # type: ignore[union-attr,index]


def _key_of(flat: Flat, sdpa: fx.Node, level: list[fx.Node], d_nope: int) -> bool:
    """Whether SDPA's key is a new tensor written by two ``copy_``: its first ``d_nope`` dims
    from piece 0 of the per-head split of kv_b_proj's output, the rest from an ``expand`` (the
    rotated shared key, on every head)."""
    key = flat.get(sdpa.args[1])
    if not (isinstance(key, fx.Node) and str(key.target) == "aten.new_empty.default"):
        return False
    writes: dict[Any, Any] = {}
    for n in level:
        if str(n.target) != "aten.copy_.default":
            continue
        cut, src = flat.get(n.args[0]), flat.get(n.args[1])
        if (
            str(getattr(cut, "target", "")) != "aten.slice.Tensor"
            or flat.get(cut.args[0]) is not key
        ):
            return False
        writes[tuple(cut.args[2:4])] = src
    first, rest = writes.get((0, d_nope)), [v for k, v in writes.items() if k[0] == d_nope]
    piece = isinstance(first, fx.Node) and first.target is operator.getitem and first.args[1] == 0
    expanded = len(rest) == 1 and str(getattr(rest[0], "target", "")) == "aten.expand.default"
    return bool(len(writes) == 2 and piece and expanded)


def _scale(m: nn.Module, sdpa: fx.Node, opts: dict[str, Any]) -> float | None:
    """The scale SDPA applies where the op would not derive it (from RoPE's mscale_all_dim)."""
    from archcomp.ops.latent_attention import MultiHeadLatentAttentionArgs, latent_scale

    given = sdpa.kwargs.get("scale", getattr(m, "scaling", None))
    if not isinstance(given, float):
        return None
    derived = latent_scale(MultiHeadLatentAttentionArgs(**opts))
    if derived is None:
        derived = (opts["qk_nope_head_dim"] + opts["qk_rope_head_dim"]) ** -0.5
    return None if math.isclose(given, derived, rel_tol=1e-9) else given
