"""The blocks a transformers ``T5Stack`` is written as (:mod:`archcomp.importer.t5` checks the
module and the traced graph, then calls these): bodies as the importer emits them, node ids
the module paths, ``s`` the sizes of one layer (``h``, ``d_kv``, ``d_model``, ``d_ff``,
``buckets``, ``distance``, ``eps``, dropouts, ``gated``, ``act``)."""

from __future__ import annotations

import math
from typing import Any

Body = dict[str, Any]


def bucket_body(num_buckets: int, max_distance: int, dec: bool) -> Body:
    """transformers' ``T5Attention._relative_position_bucket`` of key j - query i, node by
    node (bidirectional in the encoder, one-sided in the decoder)."""
    nb = num_buckets if dec else num_buckets // 2
    exact = nb // 2
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


def attention_body(s: dict[str, Any], batch: str, seq: str, dec: bool) -> Body:
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


def cross_body(s: dict[str, Any], batch: str, seq: str) -> Body:
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


def dense_body(s: dict[str, Any]) -> Body:
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


def layer_body(s: dict[str, Any], attn: str, cross: str | None, dense: str, seq: str) -> Body:
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


def block_body(layer: str, n: int, dec: bool, s: dict[str, Any], seq: str) -> Body:
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


def stack_body(bucket: str, block: str, top: dict[str, Any], seq: str, dec: bool) -> Body:
    """The T5Stack: embed, dropout, the bucket ids, the layers, final norm and dropout."""
    ins = ["input_ids", *(["encoder_hidden_states"] if dec else [])]
    binds = {"x": "dropout", "position_bias": "relative_position_bucket"}
    if dec:
        binds["encoder_hidden_states"] = "encoder_hidden_states"
    call: dict[str, Any] = {"id": "block", "op": block, "repeat": top["layers"], "in": binds}
    call["has_relative_attention_bias"] = "${index == 0}"  # the first layer's table
    if dec:
        call["_count"] = "num_decoder_layers"  # the config's, not num_layers
    drop, eps = top["drop"], top["eps"]
    nodes = [
        {
            "id": "embed_tokens",
            "op": "embedding",
            "num_embeddings": top["vocab"],
            "embedding_dim": top["width"],
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
