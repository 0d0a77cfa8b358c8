"""The IR: what the front end produces, the passes check and the backends read.

In: located documents (``Origin`` points into one). Out: :mod:`~archcomp.ir.dims` (symbolic
dims: ints and polynomials of symbols like ``B``), :class:`TensorType` (shape and dtype),
:class:`Graph` (inputs, op :class:`Node` s in topological order, outputs, block scopes) and
:mod:`~archcomp.ir.opdef` (``OpDef``: what an op is; the ops themselves live in
:mod:`archcomp.ops`). The IR knows nothing of YAML, torch or Graphviz.
"""

from archcomp.ir.graph import Graph, InputInfo, Node, Origin, Ref, Scope
from archcomp.ir.tensors import TensorType

__all__ = ["Graph", "InputInfo", "Node", "Origin", "Ref", "Scope", "TensorType"]
