"""One row per sequence, picked by a position computed from the input: CLIP's text tower pools
``last_hidden_state[torch.arange(N), input_ids.argmax(-1)]`` (the end-of-text token's features).

torch.export writes that as ``aten.index.Tensor(x, [arange, positions])``. It becomes the nodes
the shipped clip spec's ``clip_eos_pool`` uses: the positions made ``(N, 1, 1)`` (``index``),
``expand``-ed to ``(N, 1, d)``, ``gather`` along dim 1, and ``index`` ``[:, 0]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from archcomp.importer.exported import Flat
from archcomp.importer.recognise_encdec import evaluate

INDEX = "aten.index.Tensor"
# (id, op, inputs, options, the value it gives): the nodes of one pick, in order
Step = tuple[str, str, Any, dict[str, Any], fx.Node]


def rows_at(flat: Flat, n: fx.Node) -> list[Step] | str:
    """The nodes of ``x[arange(N), positions]`` for a (N, T, d) ``x`` and (N,) positions; why
    not, for any other tensor index."""
    x, index = flat.get(n.args[0]), n.args[1]
    if not isinstance(index, list | tuple) or len(index) != 2 or not all(index):
        return "indexing by tensors other than x[arange(N), positions]"
    rows, at = (flat.get(i) for i in index)
    shape = list(getattr(x.meta.get("val"), "shape", ()))
    pos = list(getattr(at.meta.get("val"), "shape", ()))
    if len(shape) != 3 or pos != shape[:1] or at in flat.context:
        return "indexing by tensors other than x[arange(N), positions] of a (N, T, d) x"
    r = evaluate(flat, rows)
    if not isinstance(r, torch.Tensor) or not torch.equal(r.cpu(), torch.arange(int(shape[0]))):
        return "indexing by tensors other than x[arange(N), positions]: rows not arange(N)"
    graph = fx.Graph()  # the values between the nodes: keys only, no graph of flat's
    made = [graph.placeholder(f"v{i}") for i in range(3)]
    d = int(shape[2])
    return [
        ("eos_index", "index", [at], {"at": "[:, None, None]"}, made[0]),  # (N, 1, 1)
        ("eos_rows", "expand", [made[0]], {"shape": [-1, -1, d]}, made[1]),  # (N, 1, d)
        ("eos_states", "gather", {"x": x, "index": made[1]}, {"dim": 1}, made[2]),
        ("pooled", "index", [made[2]], {"at": "[:, 0]"}, n),  # (N, d)
    ]
