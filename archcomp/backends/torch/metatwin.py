"""A built model's weights stood in for by meta tensors for a while: the summary's activation
trace runs on a model built on a real device without allocating, and without compiling the
spec a second time on meta.

:func:`on_meta` replaces every parameter and buffer of a model (in its modules' own tables,
so a tied tensor stays one tensor) by a meta tensor of the same shape, strides, dtype and
``requires_grad``, and puts the originals back on exit, however it is left. What runs inside
sees a model as a build on meta would give it; the model's values are not touched (a
training forward's in-place updates, such as batch norm's running statistics, land on the
stand-ins). ``nn.RNNBase`` keeps its own list of its weights: it is refreshed both ways.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from archcomp.backends.torch.module import all_modules


def _twin(t: torch.Tensor) -> torch.Tensor:
    meta = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    if isinstance(t, nn.Parameter):
        return nn.Parameter(meta, requires_grad=t.requires_grad)
    return meta.requires_grad_(t.requires_grad)


@contextmanager
def on_meta(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its parameters and buffers on meta while the block runs."""
    twins: dict[int, torch.Tensor] = {}
    saved: list[tuple[dict[str, Any], str, torch.Tensor]] = []
    modules = all_modules(model)
    rnns = [m for m in modules if isinstance(m, nn.RNNBase)]
    try:
        for m in modules:
            tables: tuple[dict[str, Any], ...] = (m._parameters, m._buffers)
            for table in tables:
                for name, t in table.items():
                    if t is None or t.is_meta:
                        continue
                    twin = twins.get(id(t))
                    if twin is None:
                        twin = twins[id(t)] = _twin(t)
                    saved.append((table, name, t))
                    table[name] = twin
        for rnn in rnns:
            rnn._init_flat_weights()
        yield model
    finally:
        for table, name, t in reversed(saved):
            table[name] = t
        for rnn in rnns:
            rnn._init_flat_weights()
