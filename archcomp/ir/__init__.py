"""The IR: symbolic dims, tensor types and the graph of op nodes."""

from archcomp.ir.graph import Graph, InputInfo, Node, Origin, Ref, Scope
from archcomp.ir.tensors import TensorType

__all__ = ["Graph", "InputInfo", "Node", "Origin", "Ref", "Scope", "TensorType"]
