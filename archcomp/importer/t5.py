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
other than ReLU or GELU, copies of unlike sizes) is refused with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from archcomp.importer.exported import Flat
from archcomp.importer.leaves import leaf_op
from archcomp.importer.recognise_encdec import evaluate

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
    bucket = register("t5_relative_position_bucket", _bucket_body(s["buckets"], s["distance"], dec))
    attn = register("t5_attention", _attention_body(s, batch, seq, dec))
    cross = register("t5_cross_attention", _cross_body(s, batch, seq)) if dec else None
    dense = register("t5_dense_act_dense", _dense_body(s))
    layer = register("t5_layer", _layer_body(s, attn, cross, dense, seq))
    block = register("t5_block", _block_body(layer, len(blocks[0].layer), dec, s, seq))
    emb = m.embed_tokens
    if not isinstance(emb, nn.Embedding) or emb.padding_idx is not None:
        raise Refused("a T5Stack whose embed_tokens is not a plain nn.Embedding")
    return register("t5_stack", _stack_body(m, emb, bucket, block, s, seq, dec))


def check_buckets(flat: Flat, path: str, m: nn.Module, group: list[fx.Node]) -> None:
    """That the first layer's table is looked up at T5's bucket ids as this module writes them
    (:func:`_bucket_body`), evaluated on the example's sizes; raises :class:`Refused`."""
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
    """The bucket ids [t, s] :func:`_bucket_body` computes (transformers'
    ``_relative_position_bucket`` of key j - query i)."""
    rel = torch.arange(s)[None, :] - torch.arange(t)[:, None]  # (t, s)
    nb = num_buckets if dec else num_buckets // 2
    exact = nb // 2
    side = torch.zeros_like(rel) if dec else (rel > 0).long() * nb
    dist = -torch.minimum(rel, torch.zeros_like(rel)) if dec else rel.abs()
    spread = torch.log(dist.float() / exact) / math.log(max_distance / exact)
    large = torch.clamp_max((spread * (nb - exact)).long() + exact, nb - 1)
    return side + torch.where(dist < exact, dist, large)


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


def _bucket_body(num_buckets: int, max_distance: int, dec: bool) -> Body:
    """transformers' ``T5Attention._relative_position_bucket`` of key j - query i, node by
    node (bidirectional in the encoder, one-sided in the decoder)."""
    nb = num_buckets if dec else num_buckets // 2
    exact = nb // 2
    if max_distance <= exact:
        raise Refused(f"a relative_attention_max_distance of {max_distance}")
    nodes: list[dict[str, Any]] = [
        {"id": "query_position", "op": "arange", "in": "query", "dim": 1},  # (T,)
        {"id": "context_position", "op": "index", "at": "[:, None]"},  # (T, 1)
        {"id": "key_position", "op": "arange", "in": "key", "dim": 1},  # (S,)
        {"id": "memory_position", "op": "index", "at": "[None, :]"},  # (1, S)
        {"id": "relative_position", "op": "sub", "in": ["memory_position", "context_position"]},
    ]
    if dec:  # only earlier keys: -min(j - i, 0)
        nodes += [
            {"id": "earlier", "op": "minimum", "scalar": 0},
            {"id": "distance", "op": "neg"},
        ]
    else:  # later keys take the upper half of the buckets
        nodes += [
            {"id": "later", "op": "gt", "scalar": 0},
            {"id": "later_ids", "op": "cast", "dtype": "int64"},
            {"id": "side", "op": "mul", "scalar": nb},
            {"id": "distance", "op": "abs", "in": "relative_position"},
        ]
    nodes += [
        {"id": "is_small", "op": "lt", "scalar": exact},
        {"id": "distance_float", "op": "cast", "in": "distance", "dtype": "float32"},
        {"id": "ratio", "op": "div", "scalar": exact},
        {"id": "log_ratio", "op": "log"},
        {"id": "spread", "op": "div", "scalar": math.log(max_distance / exact)},
        {"id": "steps", "op": "mul", "scalar": nb - exact},
        {"id": "steps_ids", "op": "cast", "dtype": "int64"},
        {"id": "large", "op": "add", "scalar": exact},
        {"id": "large_capped", "op": "minimum", "scalar": nb - 1},
        {"id": "within", "op": "where", "in": ["is_small", "distance", "large_capped"]},
    ]
    if not dec:
        nodes.append({"id": "bucket", "op": "add", "in": ["side", "within"]})
    side = "later, earlier" if not dec else "earlier"
    return {
        "inputs": ["query", "key"],
        "nodes": nodes,
        "outputs": nodes[-1]["id"],
        "shapes": f"(B, T, ...), (B, S, ...) -> (T, S): bucket ids ({side})",
    }


def _heads(name: str, x: str, s: dict[str, Any], batch: str, port: str) -> list[dict[str, Any]]:
    lin = {"id": name, "op": "linear", "in": x, "out_features": s["h"] * s["d_kv"]}
    return [
        lin | {"bias": False, "_fixed": True},  # h * d_kv, whatever d_model is
        {"id": f"{name}_heads", "op": "reshape", "shape": [batch, -1, s["h"], s["d_kv"]]},
        {"id": port, "op": "transpose", "dim0": 1, "dim1": 2},  # (B, h, L, d_kv)
    ]


def _core(s: dict[str, Any], batch: str, ports: dict[str, str], causal: bool) -> list[Any]:
    sdpa: dict[str, Any] = {"id": "attention", "op": "scaled_dot_product_attention"}
    sdpa |= {"in": ports, "scale": 1.0}
    if causal:
        sdpa["causal"] = True
    if s["attn_drop"]:
        sdpa["dropout"] = s["attn_drop"]
    return [
        sdpa,
        {"id": "heads", "op": "transpose", "dim0": 1, "dim1": 2},
        {"id": "merged", "op": "reshape", "shape": [batch, -1, s["h"] * s["d_kv"]]},
        {"id": "o", "op": "linear", "out_features": s["d_model"], "bias": False},
    ]


def _attention_body(s: dict[str, Any], batch: str, seq: str, dec: bool) -> Body:
    has = "${has_relative_attention_bias}"
    nodes = [*_heads("q", "x", s, batch, "query"), *_heads("k", "x", s, batch, "key")]
    nodes += _heads("v", "x", s, batch, "value")
    nodes += [
        {
            "id": "relative_attention_bias",
            "op": "embedding",
            "in": "position_bias",
            "num_embeddings": s["buckets"],
            "embedding_dim": s["h"],
            "when": has,
        },  # (L, L, h)
        {"id": "bias_heads", "op": "permute", "dims": [2, 0, 1], "when": has},
        {"id": "bias", "op": "index", "at": "[None]", "when": has},  # (1, h, L, L)
    ]
    ports = {"query": "query", "key": "key", "value": "value", "score_bias": "bias"}
    nodes += _core(s, batch, ports, causal=dec)
    h, L = s["h"], seq
    return {
        "params": {"has_relative_attention_bias": False},
        "inputs": ["x", "position_bias"],
        "nodes": nodes,
        "outputs": {"out": "o", "position_bias": "bias"},
        "shapes": f"(B, {L}, d), ({L}, {L}) bucket ids or (1, {h}, {L}, {L}) bias "
        f"-> (B, {L}, d), (1, {h}, {L}, {L})",
    }


def _cross_body(s: dict[str, Any], batch: str, seq: str) -> Body:
    nodes = [*_heads("q", "x", s, batch, "query")]
    nodes += _heads("k", "key_value_states", s, batch, "key")
    nodes += _heads("v", "key_value_states", s, batch, "value")
    nodes += _core(s, batch, {"query": "query", "key": "key", "value": "value"}, causal=False)
    return {
        "inputs": ["x", "key_value_states"],
        "nodes": nodes,
        "outputs": "o",
        "shapes": f"(B, {seq}, d), (B, S, d) -> (B, {seq}, d)",
    }


def _dense_body(s: dict[str, Any]) -> Body:
    op, args = s["act"]
    act = {"id": "act", "op": op} | args
    drop = {"id": "dropout", "op": "dropout", "p": s["ff_drop"]}
    wo = {"id": "wo", "op": "linear", "out_features": s["d_model"], "bias": False}
    lin = {"op": "linear", "out_features": s["d_ff"], "bias": False}
    if s["gated"]:  # wo(act(wi_0 x) * wi_1 x)
        nodes = [
            {"id": "wi_0", **lin},
            act,
            {"id": "wi_1", "in": "x", **lin},
            {"id": "mul", "op": "mul", "in": ["act", "wi_1"]},
        ]
    else:
        nodes = [{"id": "wi", **lin}, act]
    return {
        "inputs": ["x"],
        "nodes": [*nodes, drop, wo],
        "outputs": "wo",
        "shapes": "(..., d) -> (..., d)",
    }


def _layer_body(s: dict[str, Any], attn: str, cross: str | None, dense: str, seq: str) -> Body:
    """One of a T5Block's sub-layers, ``layer.{index}``: x + dropout(sub(layer_norm(x)))."""
    last = 2 if cross else 1
    self_attn = {
        "id": "SelfAttention",
        "op": attn,
        "in": {"x": "layer_norm", "position_bias": "position_bias"},
        "when": "${index == 0}",
        "has_relative_attention_bias": "${has_relative_attention_bias}",
    }
    nodes: list[dict[str, Any]] = [
        {"id": "layer_norm", "op": "rms_norm", "in": "x", "eps": s["eps"]},
        self_attn,
    ]
    if cross:
        nodes.append(
            {
                "id": "EncDecAttention",
                "op": cross,
                "in": {"x": "SelfAttention.out", "key_value_states": "encoder_hidden_states"},
                "when": "${index == 1}",
            }
        )
    ff_in = "EncDecAttention" if cross else "SelfAttention.out"
    nodes += [
        {"id": "DenseReluDense", "op": dense, "in": ff_in, "when": f"${{index == {last}}}"},
        {"id": "dropout", "op": "dropout", "p": s["drop"]},
        {"id": "add", "op": "add", "in": ["x", "dropout"]},
    ]
    ins = ["x", "position_bias", *(["encoder_hidden_states"] if cross else [])]
    return {
        "params": {"has_relative_attention_bias": False},
        "inputs": ins,
        "nodes": nodes,
        "outputs": {"out": "add", "position_bias": "SelfAttention.position_bias"},
        "shapes": f"(B, {seq}, d), position bias -> (B, {seq}, d), position bias",
    }


def _block_body(layer: str, n: int, dec: bool, s: dict[str, Any], seq: str) -> Body:
    ins = ["x", "position_bias", *(["encoder_hidden_states"] if dec else [])]
    call = {
        "id": "layer",
        "op": layer,
        "repeat": n,
        "in": {k: k for k in ins},
        "has_relative_attention_bias": "${has_relative_attention_bias}",
        "_fixed": True,  # the sub-layers of one block, not the config's layer count
    }
    return {
        "params": {"has_relative_attention_bias": False},
        "inputs": ins,
        "nodes": [call],
        "outputs": {"out": "layer.out", "position_bias": "layer.position_bias"},
        "shapes": f"(B, {seq}, d), position bias -> (B, {seq}, d), position bias",
    }


def _stack_body(
    m: nn.Module, emb: nn.Embedding, bucket: str, block: str, s: dict[str, Any], seq: str, dec: bool
) -> Body:
    ins = ["input_ids", *(["encoder_hidden_states"] if dec else [])]
    binds = {"x": "dropout", "position_bias": "relative_position_bucket"}
    if dec:
        binds["encoder_hidden_states"] = "encoder_hidden_states"
    call: dict[str, Any] = {"id": "block", "op": block, "repeat": len(m.block), "in": binds}  # type: ignore[arg-type]
    call["has_relative_attention_bias"] = "${index == 0}"  # the first layer's table
    if dec:
        call["_count"] = "num_decoder_layers"  # the config's, not num_layers
    drop = _p(m.dropout)
    eps = _eps(m.final_layer_norm)
    nodes = [
        {
            "id": "embed_tokens",
            "op": "embedding",
            "num_embeddings": emb.num_embeddings,
            "embedding_dim": emb.embedding_dim,
        },
        {"id": "dropout", "op": "dropout", "p": drop},
        {"id": "relative_position_bucket", "op": bucket, "in": ["dropout", "dropout"]},
        call,
        {"id": "final_layer_norm", "op": "rms_norm", "in": "block.out", "eps": eps},
        {"id": "dropout_1", "op": "dropout", "p": drop},
    ]
    shape = f"(B, {seq})" + (", (B, S, d)" if dec else "")
    return {
        "inputs": ins,
        "nodes": nodes,
        "outputs": "dropout_1",
        "shapes": f"{shape} -> (B, {seq}, d)",
    }


__all__ = ["Refused", "buckets", "check_buckets", "is_stack", "stack_block", "stray_calls"]
