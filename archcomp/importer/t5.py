"""transformers' ``T5Stack`` (T5's encoder and decoder) as blocks whose node ids are its module
paths, so its ``state_dict`` loads with no mapping.

What the generic walk cannot say, and how this writes it:

- the relative position bias is computed by the first layer's attention from its own table
  (``block.0.layer.0.SelfAttention.relative_attention_bias``) and handed to every later layer.
  The ``t5_relative_position_bias`` op cannot hold that key beside the attention's ``q``, ``k``,
  ``v``, ``o`` (its table is ``<id>.relative_attention_bias.weight``, the attention's node
  would need the same id), so the attention is a block (``t5_attention``): ``q``, ``k``, ``v``
  and ``o`` are linears, the heads split by ``reshape`` and ``transpose``, the scores by
  ``scaled_dot_product_attention`` with ``scale: 1.0`` (T5 does not scale) and the bias as its
  ``score_bias``, causal in the decoder. The stack computes the bucket ids once
  (``t5_relative_position_bucket``, a block of arange/sub/abs/log/... as transformers'
  ``_relative_position_bucket`` does; no weights, so any id) and binds them to the first
  layer's ``position_bias``; the first layer's attention looks them up in its
  ``relative_attention_bias`` embedding (``when: has_relative_attention_bias``), and the bias
  it makes is carried (a block result named like the input) to every later layer, where the
  lookup is absent and the input passes on;
- each ``T5Block``'s ``layer`` ModuleList of unlike sub-layers (self-attention,
  cross-attention, feed-forward) is one ``t5_layer`` block repeated 2 (3 in the decoder)
  times, each sub-layer's module present by ``when: "${index == i}"`` (an absent node passes
  its first input on);
- the cross-attention's position bias is zeros (it has no table): no ``score_bias``.

Anything else than this structure (other children, biases on the projections, an activation
no op computes, copies of unlike sizes, a traced call these blocks do not make) is refused
with a reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from archcomp.importer import t5_bodies as bodies
from archcomp.importer.exported import Flat
from archcomp.importer.leaves import leaf_op
from archcomp.importer.recognise_encdec import evaluate
from archcomp.nn.positional import t5_buckets

Body = dict[str, Any]
Register = Callable[[str, Body], str]  # (base name, body) -> the block's name
# transformers' activation modules (torch.nn's, ReLU included, map as any leaf does)
_ACTS = {"NewGELUActivation": ("gelu", {"approximate": "tanh"}), "GELUActivation": ("gelu", {})}


class Refused(Exception):
    """A T5 stack this cannot write; the message says what, ``at`` the module path (under the
    stack) whose first call the refusal names."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.at = at


def _under(prefix: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, a refusal's ``at`` put under ``prefix``."""
    try:
        return fn(*args)
    except Refused as e:
        e.at = f"{prefix}.{e.at}" if e.at else prefix
        raise


def is_stack(m: nn.Module) -> bool:
    return type(m).__name__ == "T5Stack"


def stack_block(m: nn.Module, register: Register, batch: str, seq: str) -> str:
    """The block of the T5Stack ``m`` (registered with its inner blocks); ``batch`` and ``seq``
    name its input's dims in shape comments and reshapes. Raises :class:`Refused`."""
    kids = dict(m.named_children())
    if set(kids) != {"embed_tokens", "block", "final_layer_norm", "dropout"}:
        raise Refused(f"a T5Stack with children {sorted(kids)}")
    dec = bool(getattr(m, "is_decoder", False))
    blocks: list[Any] = list(m.block)  # type: ignore[arg-type]
    if not blocks:
        raise Refused("a T5Stack without layers")
    sizes = [_under(f"block.{i}", _block_sizes, b, i, dec) for i, b in enumerate(blocks)]
    if any(s != sizes[0] for s in sizes):
        raise Refused("T5 layers of unlike sizes")
    s = sizes[0]
    if s["distance"] <= (s["buckets"] if dec else s["buckets"] // 2) // 2:  # the exact ones
        raise Refused(f"a relative_attention_max_distance of {s['distance']}")
    bucket = register(
        "t5_relative_position_bucket", bodies.bucket_body(s["buckets"], s["distance"], dec)
    )
    attn = register("t5_attention", bodies.attention_body(s, batch, seq, dec))
    cross = register("t5_cross_attention", bodies.cross_body(s, batch, seq)) if dec else None
    dense = register("t5_dense_act_dense", bodies.dense_body(s))
    layer = register("t5_layer", bodies.layer_body(s, attn, cross, dense, seq))
    block = register("t5_block", bodies.block_body(layer, len(blocks[0].layer), dec, s, seq))
    emb = m.embed_tokens
    if not isinstance(emb, nn.Embedding) or emb.padding_idx is not None:
        raise Refused("a T5Stack whose embed_tokens is not a plain nn.Embedding", "embed_tokens")
    top: dict[str, Any] = {
        "vocab": emb.num_embeddings,
        "width": emb.embedding_dim,
        "layers": len(blocks),
    }
    top |= {"drop": _p(m.dropout), "eps": _eps(m.final_layer_norm)}
    return register("t5_stack", bodies.stack_body(bucket, block, top, seq, dec))


def check_buckets(flat: Flat, path: str, m: nn.Module, group: list[fx.Node]) -> None:
    """That the first layer's table is looked up at T5's bucket ids as this module writes them
    (:func:`.t5_bodies.bucket_body`), evaluated on the example's sizes; raises :class:`Refused`."""
    at = "block.0.layer.0.SelfAttention.relative_attention_bias"
    looks = [
        n
        for n in group
        if flat.scope[n][-1:] == (f"{path}.{at}",) and str(n.target) == "aten.embedding.default"
    ]
    idx = looks[0].args[1] if len(looks) == 1 else None
    ids = evaluate(flat, idx) if isinstance(idx, fx.Node) else None
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise Refused("relative position buckets that cannot be evaluated on the example", at)
    a: Any = m.block[0].layer[0].SelfAttention  # type: ignore[index,union-attr]
    nb, far = int(a.relative_attention_num_buckets), int(a.relative_attention_max_distance)
    want = buckets(int(ids.shape[0]), int(ids.shape[1]), nb, far, bool(a.is_decoder))
    if not torch.equal(ids.cpu().long(), want):
        raise Refused("relative position buckets other than T5's", at)


_CALLS = {  # what a T5Stack's own and its modules' calls may be (activations apart)
    "aten.add.Tensor",
    "aten.embedding.default",
    "aten.linear.default",
    "aten.mean.dim",
    "aten.mul.Tensor",
    "aten.permute.default",
    "aten.pow.Tensor_Scalar",
    "aten.reshape.default",
    "aten.rsqrt.default",
    "aten.scaled_dot_product_attention.default",
    "aten.transpose.int",
    "aten.unsqueeze.default",
    "aten.view.default",
    "aten.where.ScalarOther",
}
_ACT_CALLS = {"aten.relu.default", "aten.gelu.default", "aten.silu.default", "aten.tanh.default"}
_ACT_CALLS |= {"aten.sigmoid.default"}


def stray_calls(flat: Flat, path: str, group: list[fx.Node]) -> list[tuple[fx.Node, str]]:
    """Calls of the stack at ``path`` that the blocks :func:`stack_block` writes do not
    compute, each with the reason: another aten op, or a mask (``where``) that hides keys,
    where only the decoder's self-attention is causal."""
    out: list[tuple[fx.Node, str]] = []
    seen: set[str] = set()
    for n in group:
        op = str(n.target)
        if op not in _CALLS | _ACT_CALLS and op not in seen:
            seen.add(op)
            out.append((n, "no call of the blocks a T5Stack is written as"))
        elif op == "aten.where.ScalarOther" and not _keeps(flat, path, n):
            out.append((n, "a mask that hides keys (an attention_mask is not imported)"))
    return out


def _keeps(flat: Flat, path: str, n: fx.Node) -> bool:
    """Whether the mask ``where(cond, bias, min)`` hides nothing a spec does not: all True,
    or the causal mask in the decoder's self-attention (``causal: true``)."""
    cond = evaluate(flat, n.args[0]) if isinstance(n.args[0], fx.Node) else None
    if not isinstance(cond, torch.Tensor) or cond.dim() < 2:
        return False
    if bool(cond.all()):
        return True
    t, s = cond.shape[-2:]
    causal = torch.arange(t)[:, None] >= torch.arange(s)[None, :]
    self_attn = any(
        p.startswith(f"{path}.block.") and p.endswith(".SelfAttention") for p in flat.scope[n]
    )
    is_dec = bool(getattr(flat.model.get_submodule(path), "is_decoder", False))
    return self_attn and is_dec and bool((cond.cpu() == causal).all())


def buckets(t: int, s: int, num_buckets: int, max_distance: int, dec: bool) -> torch.Tensor:
    """T5's bucket ids [t, s] of key j - query i (transformers' ``_relative_position_bucket``,
    as :func:`archcomp.nn.positional.t5_buckets` computes it)."""
    rel = torch.arange(s)[None, :] - torch.arange(t)[:, None]  # (t, s)
    return t5_buckets(rel, not dec, num_buckets, max_distance)


def _p(d: Any) -> float:
    if not isinstance(d, nn.Dropout):
        raise Refused(f"a {type(d).__name__} where T5 has a Dropout")
    return float(d.p)


def _eps(n: Any) -> float:
    eps = getattr(n, "variance_epsilon", None)
    if type(n).__name__ != "T5LayerNorm" or not isinstance(eps, float):
        raise Refused(f"a {type(n).__name__} where T5 has a T5LayerNorm")
    return eps


def _block_sizes(b: nn.Module, i: int, dec: bool) -> dict[str, Any]:
    """The sizes of T5Block ``b`` (the ``i``-th), checked against T5's structure."""
    want = ["T5LayerSelfAttention", *(["T5LayerCrossAttention"] if dec else []), "T5LayerFF"]
    layer = list(getattr(b, "layer", []))
    if type(b).__name__ != "T5Block" or [type(x).__name__ for x in layer] != want:
        raise Refused(f"a T5 block whose layers are not {', '.join(want)}")
    attn = _under("layer.0.SelfAttention", _attention_sizes, layer[0].SelfAttention, i == 0)
    out: dict[str, Any] = {**attn, "eps": _eps(layer[0].layer_norm), "drop": _p(layer[0].dropout)}
    if dec:
        cross = _under("layer.1.EncDecAttention", _attention_sizes, layer[1].EncDecAttention, False)
        if {k: cross[k] for k in ("h", "d_kv", "d_model")} != {
            k: attn[k] for k in ("h", "d_kv", "d_model")
        }:
            raise Refused("a T5 cross-attention unlike the self-attention")
    ff = layer[-1]
    if {_eps(x.layer_norm) for x in layer} != {out["eps"]}:
        raise Refused("T5 layer norms of unlike eps")
    if {_p(x.dropout) for x in layer} != {out["drop"]}:
        raise Refused("T5 dropouts of unlike p")
    return out | _under(f"layer.{len(layer) - 1}.DenseReluDense", _dense_sizes, ff.DenseReluDense)


def _linear(m: Any, name: str) -> nn.Linear:
    lin = getattr(m, name, None)
    if not isinstance(lin, nn.Linear) or lin.bias is not None:
        raise Refused(f"a T5 {name} that is not an nn.Linear without bias")
    return lin


def _attention_sizes(a: nn.Module, first: bool) -> dict[str, Any]:
    has = bool(getattr(a, "has_relative_attention_bias", False))
    kids = set(dict(a.named_children()))
    want = {"q", "k", "v", "o"} | ({"relative_attention_bias"} if has else set())
    if type(a).__name__ != "T5Attention" or kids != want:
        raise Refused(f"a T5 attention with children {sorted(kids)}")
    if has != first:
        raise Refused("a relative position bias in a T5 layer other than the first")
    if float(getattr(a, "scaling", 1.0)) != 1.0:
        raise Refused("a T5 attention whose scores are scaled")
    q, _, _, o = (_linear(a, n) for n in ("q", "k", "v", "o"))
    h, d = int(a.n_heads), int(a.key_value_proj_dim)  # type: ignore[arg-type]
    if q.out_features != h * d or o.in_features != h * d:
        raise Refused("a T5 attention whose projections are not n_heads * d_kv wide")
    return {
        "h": h,
        "d_kv": d,
        "d_model": q.in_features,
        "buckets": int(a.relative_attention_num_buckets),  # type: ignore[arg-type]
        "distance": int(a.relative_attention_max_distance),  # type: ignore[arg-type]
        "attn_drop": float(a.dropout),  # type: ignore[arg-type]
    }


def _dense_sizes(f: nn.Module) -> dict[str, Any]:
    kind = type(f).__name__
    if kind not in ("T5DenseActDense", "T5DenseGatedActDense"):
        raise Refused(f"a T5 feed-forward {kind}")
    name = type(f.act).__name__
    act: Any = _ACTS.get(name)
    if act is None and type(f.act).__module__.startswith("torch.nn"):
        act = leaf_op(f.act)  # type: ignore[arg-type]
    if not isinstance(act, tuple):
        raise Refused(
            act if isinstance(act, str) else f"a T5 feed-forward activation {name}", "act"
        )
    gated = kind == "T5DenseGatedActDense"
    wi = _linear(f, "wi_0" if gated else "wi")
    if gated:
        _linear(f, "wi_1")
    return {"gated": gated, "act": act, "d_ff": wi.out_features, "ff_drop": _p(f.dropout)}


__all__ = ["Refused", "buckets", "check_buckets", "is_stack", "stack_block", "stray_calls"]
