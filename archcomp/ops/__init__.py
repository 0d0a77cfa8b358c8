"""The op library. Importing this package declares every op in the registry."""

from archcomp.ops import (  # noqa: F401  (each module registers its ops)
    activation,
    arith,
    dense,
)
from archcomp.ops.registry import REGISTRY, OpArgs, OpDef, Port, ShapeError, Style, all_ops, get_op

__all__ = ["REGISTRY", "OpArgs", "OpDef", "Port", "ShapeError", "Style", "all_ops", "get_op"]
