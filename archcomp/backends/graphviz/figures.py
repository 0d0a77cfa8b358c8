"""Built-in insides of composite ops, drawn when ``--expand`` names them (the paper's Figure 2).

Each figure is data: its parts (boxes), the edges between them, which op ports enter which
part, which part gives the result, and an optional stacked frame ("h×") whose count comes from
an op argument. A part whose ``op`` names another composite op (the scaled dot-product
attention inside multi-head attention) is itself expanded when that op is expanded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    id: str
    label: str
    family: str
    op: str | None = None  # a nested composite op, expandable in turn


@dataclass(frozen=True)
class Figure:
    op: str
    parts: tuple[Part, ...]
    edges: tuple[tuple[str, str], ...]  # part -> part
    ports: dict[str, str]  # op input port -> part it enters
    result: str  # the part whose output is the op's result
    stack: tuple[str, ...] = ()  # parts drawn inside a stacked frame
    stack_count: str | None = None  # op argument holding the count (num_heads)
    stack_symbol: str = "h"
    same_rank: tuple[tuple[str, ...], ...] = ()  # parts drawn side by side


SCALED_DOT_PRODUCT = Figure(
    op="scaled_dot_product_attention",
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
    ports={"query": "matmul1", "key": "matmul1", "value": "matmul2", "mask": "mask"},
    result="matmul2",
)

MULTI_HEAD = Figure(
    op="multi_head_attention",
    parts=(
        Part("linear_v", "Linear", "linear"),
        Part("linear_k", "Linear", "linear"),
        Part("linear_q", "Linear", "linear"),
        Part("attention", "Scaled Dot-Product Attention", "attention", SCALED_DOT_PRODUCT.op),
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
    ports={
        "value": "linear_v",
        "key": "linear_k",
        "query": "linear_q",
        "key_padding_mask": "attention:mask",
    },
    result="linear_out",
    stack=("linear_v", "linear_k", "linear_q", "attention"),
    stack_count="num_heads",
    same_rank=(("linear_v", "linear_k", "linear_q"),),
)

FIGURES: dict[str, Figure] = {f.op: f for f in (MULTI_HEAD, SCALED_DOT_PRODUCT)}
