"""Weights of part of a model, computed on their own: the values a full build gives them.

A build seeds each node's construction and its initializers from (seed, node name) (see
:mod:`archcomp.backends.torch.init`), so a node's weights do not depend on any other node.
:func:`node_tensors` lowers only the named nodes, with no forward traced, on a real device,
and returns each of their parameters and buffers at the state-dict key a full build gives it:
exactly what :func:`archcomp.build` with the same seed, device and dtype holds there. This is
how :func:`archcomp.distributed.shard` fills a model built on ``meta`` one FSDP unit at a
time, without ever holding the whole model.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from archcomp.backends.torch.codegen import Compiler, weight_key
from archcomp.ir import Graph


def node_tensors(
    g: Graph, names: Iterable[str], device: torch.device, dtype: torch.dtype, seed: int | None
) -> dict[str, torch.Tensor]:
    """State-dict key -> tensor of the weights the nodes ``names`` own (parameters and buffers,
    tied and shared ones excluded: their owner's node holds them), as a build of ``g`` with
    ``seed`` on ``device`` in ``dtype`` initialises them."""
    c = Compiler(g, device, dtype, seed)
    wanted = [g.nodes[n] for n in names]
    root = c.lower_only(wanted)
    skip = {weight_key(c.paths[n.name], p) for n in wanted if n.name in c.paths for p in n.tie}
    out: dict[str, torch.Tensor] = {}
    for name, t in [
        *root.named_parameters(remove_duplicate=False),
        *root.named_buffers(remove_duplicate=False),
    ]:
        if name not in skip and t.device.type != "meta":
            out[name] = t.detach()
    return out
