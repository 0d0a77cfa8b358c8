"""The op library. Importing this package declares every op in the registry."""

from archcomp.ops import (  # noqa: F401  (each module registers its ops)
    activation,
    arith,
    attention,
    conv,
    dense,
    norm,
    pool,
    positional,
    recurrent,
    reduce,
    resample,
    shape,
)
from archcomp.ops.registry import REGISTRY, OpArgs, OpDef, Port, ShapeError, Style, all_ops, get_op

__all__ = ["REGISTRY", "OpArgs", "OpDef", "Port", "ShapeError", "Style", "all_ops", "get_op"]
