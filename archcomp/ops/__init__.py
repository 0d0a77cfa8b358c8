"""The op library: one file per op family, each op declared once in the registry.

In: the IR's op interface (:mod:`archcomp.ir.opdef`). Out: :data:`REGISTRY`, read through
:func:`get_op` and :func:`all_ops`. Importing this package declares every op; an op's
argument model, ports, shape rule, parameter shapes, MACs, drawing style and torch lowering
all sit in its one ``register(OpDef(...))`` call.
"""

from archcomp.ops import (  # noqa: F401  (each module registers its ops)
    activation,
    arith,
    attention,
    compare,
    conv,
    create,
    dense,
    latent_attention,
    layout,
    moe,
    norm,
    parameter,
    pool,
    positional,
    recurrent,
    reduce,
    relative_bias,
    resample,
    scan,
    select,
    shape,
)
from archcomp.ops.registry import REGISTRY, OpArgs, OpDef, Port, ShapeError, Style, all_ops, get_op

__all__ = ["REGISTRY", "OpArgs", "OpDef", "Port", "ShapeError", "Style", "all_ops", "get_op"]
