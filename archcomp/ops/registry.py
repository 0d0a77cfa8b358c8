"""The op registry: each op is declared once (an :class:`OpDef`, with its argument schema,
ports, results, shape rule, parameter shapes, MAC count, drawing style and torch lowering).

Importing :mod:`archcomp.ops` declares every op; :func:`get_op` and :func:`all_ops` read them.
"""

from __future__ import annotations

from archcomp.ir.opdef import (
    RESERVED_ARG_NAMES,
    LowerCtx,
    Lowering,
    MacRule,
    NoArgs,
    OpArgs,
    OpDef,
    ParamRule,
    Port,
    ShapeCtx,
    ShapeError,
    ShapeResult,
    ShapeRule,
    Style,
    arg_names,
)

__all__ = [
    "PALETTE",
    "REGISTRY",
    "LowerCtx",
    "Lowering",
    "MacRule",
    "NoArgs",
    "OpArgs",
    "OpDef",
    "ParamRule",
    "Port",
    "ShapeCtx",
    "ShapeError",
    "ShapeResult",
    "ShapeRule",
    "Style",
    "all_ops",
    "get_op",
    "register",
]

# One colour per op family (the Transformer paper's Figure 1 where it has one).
PALETTE: dict[str, str] = {
    "attention": "#fcd9b0",  # light orange
    "addnorm": "#f5f2b8",  # pale yellow
    "feedforward": "#c2e4f3",  # light blue
    "embedding": "#f6c6d1",  # pink
    "linear": "#dcd3f0",  # lavender
    "softmax": "#c9ebc4",  # light green
    "conv": "#b9dcc8",  # sea green
    "pool": "#d8e9b0",  # lime
    "recurrent": "#f2c7a5",  # apricot
    "norm": "#f5f2b8",  # pale yellow (norms are the paper's Add & Norm colour)
    "activation": "#e6e6e6",  # light grey
    "dropout": "#eeeeee",
    "shape": "#ffffff",  # reshapes, slicing: plain
    "arith": "#ffffff",
    "posenc": "#ffffff",
    "io": "#ffffff",
}


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    """Declare an op. Refused: a second op of the same name, an argument named like a node key
    (``init``, ``in``, ... of :data:`RESERVED_ARG_NAMES`)."""
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} declared twice")
    clash = sorted(arg_names(op.args) & RESERVED_ARG_NAMES)
    if clash:
        raise ValueError(
            f"op {op.name!r}: argument {', '.join(map(repr, clash))} is a node key; a spec's "
            f"{clash[0]!r} would be read as the node's, never as the argument "
            f"(reserved: {', '.join(sorted(RESERVED_ARG_NAMES))}); name it {clash[0]}_value "
            "or after what it means"
        )
    REGISTRY[op.name] = op
    return op


def get_op(name: str) -> OpDef | None:
    return REGISTRY.get(name)


def all_ops() -> dict[str, OpDef]:
    return dict(sorted(REGISTRY.items()))
