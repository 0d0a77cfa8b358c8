"""Compile a checked graph with the real torch backend, for op tests.

The op tests exercise each op's ``lower`` through the compiler users run
(:func:`archcomp.api.build_graph`), not through a stand-in.
"""

from __future__ import annotations

from typing import Any

import torch

from archcomp.api import build_graph
from archcomp.backends.torch.module import ArchModule
from archcomp.ir import Graph
from archcomp.ops import get_op
from archcomp.ops.registry import PALETTE


def check_declared(name: str, family: str, label: str) -> None:
    """The op is registered with its drawing style (family, label), a lowering and a doc."""
    op = get_op(name)
    assert op is not None
    assert (op.style.family, op.style.label) == (family, label)
    assert op.style.family in PALETTE
    assert op.lower is not None and op.doc


def compile_for_test(g: Graph, device: Any = "cpu", dtype: Any = None) -> ArchModule:
    """The graph compiled as ``archcomp.build`` compiles it (float32 unless ``dtype``)."""
    return build_graph(g, device=device, dtype=dtype)


def run(model: ArchModule, *xs: torch.Tensor, **kw: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's outputs by output name, also for a spec with a single output."""
    result = model(*xs, **kw)
    if isinstance(result, torch.Tensor):
        assert len(model.output_names) == 1, model.output_names
        return {model.output_names[0]: result}
    assert isinstance(result, dict), type(result)
    assert tuple(result) == model.output_names, (tuple(result), model.output_names)
    return result
