"""How attention is drawn: the paper's Figure 2 insides, and their variants from a node's
arguments (grouped-query heads, RoPE, q-k norm, soft cap, relative bias, causal mask)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from archcomp.ir.drawing import Figure, Part

# The insides drawn by --expand (the paper's Figure 2), for an op with no arguments to show.
SCALED_DOT_PRODUCT_FIGURE = Figure(
    parts=(
        Part("matmul1", "MatMul", "linear"),
        Part("scale", "Scale", "addnorm"),
        Part("mask", "Mask (opt.)", "embedding"),
        Part("softmax", "SoftMax", "softmax"),
        Part("matmul2", "MatMul", "linear"),
    ),
    edges=(
        ("matmul1", "scale"),
        ("scale", "mask"),
        ("mask", "softmax"),
        ("softmax", "matmul2"),
    ),
    ports=(
        ("query", "matmul1"),
        ("key", "matmul1"),
        ("value", "matmul2"),
        ("mask", "mask"),
        ("score_bias", "mask"),
    ),
    result="matmul2",
)

MULTI_HEAD_FIGURE = Figure(
    parts=(
        Part("linear_v", "Linear", "linear"),
        Part("linear_k", "Linear", "linear"),
        Part("linear_q", "Linear", "linear"),
        Part(
            "attention", "Scaled Dot-Product Attention", "attention", "scaled_dot_product_attention"
        ),
        Part("concat", "Concat", "addnorm"),
        Part("linear_out", "Linear", "linear"),
    ),
    edges=(
        ("linear_v", "attention:value"),
        ("linear_k", "attention:key"),
        ("linear_q", "attention:query"),
        ("attention", "concat"),
        ("concat", "linear_out"),
    ),
    ports=(
        ("value", "linear_v"),
        ("key", "linear_k"),
        ("query", "linear_q"),
        ("key_padding_mask", "attention:mask"),
        ("mask", "attention:mask"),
        ("score_bias", "attention:score_bias"),
    ),
    result="linear_out",
    stack=("linear_v", "linear_k", "linear_q", "attention"),
    stack_count="num_heads",
    same_rank=(("linear_v", "linear_k", "linear_q"),),
)

MASK_PORTS = frozenset({"mask", "key_padding_mask"})


def mask_words(a: Any, ports: frozenset[str]) -> str | None:
    """The mask box's words: the mask a node applies, or None when it applies none."""
    window = getattr(a, "window", 0)
    if getattr(a, "causal", False):
        return f"Causal Mask (window {window})" if window else "Causal Mask"
    return "Mask" if ports & MASK_PORTS else None


def sdpa_figure(a: Any, ports: frozenset[str]) -> Figure:
    """MatMul, Scale, [Relative Bias], [Soft-Cap], [Mask], SoftMax, MatMul: only the steps
    the node takes (a mask only when it is causal or an input)."""
    parts = [Part("matmul1", "MatMul", "linear"), Part("scale", "Scale", "addnorm")]
    if "score_bias" in ports:
        parts.append(Part("bias", "+ Relative Bias", "embedding"))
    if getattr(a, "softcap", None) is not None:
        cap = f"{a.softcap:g}"
        parts.append(Part("softcap", f"Soft-Cap ({cap} tanh(s / {cap}))", "addnorm"))
    words = mask_words(a, ports)
    if words is not None:
        parts.append(Part("mask", words, "embedding"))
    parts += [Part("softmax", "SoftMax", "softmax"), Part("matmul2", "MatMul", "linear")]
    ids = [p.id for p in parts]
    mask_at = "mask" if words is not None else "softmax"
    return Figure(
        parts=tuple(parts),
        edges=tuple(pairwise(ids)),
        ports=(
            ("query", "matmul1"),
            ("key", "matmul1"),
            ("value", "matmul2"),
            ("mask", mask_at),
            ("score_bias", "bias" if "bias" in ids else "scale"),
        ),
        result="matmul2",
    )


def head_words(a: Any) -> str | None:
    """``32 query, 8 key/value heads`` for grouped-query attention; None for plain heads."""
    kv = getattr(a, "num_kv_heads", None)
    if kv is None or kv == a.num_heads:
        return None
    return f"{a.num_heads} query, {kv} key/value head{'s' if kv > 1 else ''}"


def mha_caption(a: Any, ports: frozenset[str]) -> str | None:
    """The detail under a collapsed attention box: head counts, what rotates, biases or caps
    the scores."""
    bits = []
    if words := head_words(a):
        bits.append(f"h = {words}")
    if a.qk_norm is not None:
        bits.append("q-k norm")
    if a.rope is not None:
        bits.append("RoPE")
    if "score_bias" in ports:
        bits.append("relative bias")
    if a.softcap is not None:
        bits.append(f"soft-cap {a.softcap:g}")
    return " · ".join(bits) or None


def mha_figure(a: Any, ports: frozenset[str]) -> Figure:
    """Figure 2's multi-head attention, with the node's head counts in the frame's label
    (``stack_count``), q-k norm and RoPE between the q/k projections and the attention.
    Fewer key/value heads (grouped-query) get their own stacked frame: "8× (8 key/value
    heads)" beside "h× (h = 32 query heads)"."""
    parts = list(MULTI_HEAD_FIGURE.parts)
    edges = [e for e in MULTI_HEAD_FIGURE.edges if e[0] not in ("linear_q", "linear_k")]
    stack = list(MULTI_HEAD_FIGURE.stack)
    tail = {"linear_q": "linear_q", "linear_k": "linear_k"}
    steps = []
    if a.qk_norm is not None:
        kind = "RMS Norm" if a.qk_norm.kind == "rms" else "Layer Norm"
        steps.append(("norm", kind, "norm"))
    if a.rope is not None:
        steps.append(("rope", "RoPE", "posenc"))
    for side in ("q", "k"):
        for sid, label, family in steps:
            pid = f"{sid}_{side}"
            parts.append(Part(pid, label, family))
            stack.append(pid)
            edges.append((tail[f"linear_{side}"], pid))
            tail[f"linear_{side}"] = pid
    edges += [(tail["linear_q"], "attention:query"), (tail["linear_k"], "attention:key")]
    kv = a.num_kv_heads if head_words(a) else None  # grouped-query: its own stacked frame
    return Figure(
        parts=tuple(parts),
        edges=tuple(edges),
        ports=MULTI_HEAD_FIGURE.ports,
        result="linear_out",
        stack=tuple(stack),
        stack_count="num_heads",
        same_rank=MULTI_HEAD_FIGURE.same_rank,
        stack_label=f"h× (h = {a.num_heads} query heads)" if kv else None,
        side_stack=tuple(p for p in stack if p.endswith(("_k", "_v"))) if kv else (),  # K, V
        side_stack_label=f"{kv}× ({kv} key/value head{'s' if kv > 1 else ''})" if kv else None,
    )
