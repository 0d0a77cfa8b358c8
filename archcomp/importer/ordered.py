"""Numbered children that cannot be one repeat, as one block of nodes ``0``, ``1``, ... in order.

An ``nn.Sequential(LayerNorm, Conv2d)`` (ConvNeXt's downsampling layer), ``nn.Sequential(Flatten,
Linear)`` (ResNet's classifier), or a stage whose copies differ in the blocks they call (a ResNet
stage's first layer and the others) runs ``P.0``, ``P.1``, ... whose parameters are ``P.0.*``,
``P.1.*``. Where the copies are not one op or one block (even reading ``index``), the run becomes
a block of its own, named after ``P``, whose nodes have the ids ``0``, ``1``, ... (the path's
last part, so the keys stay ``P.0.weight``) and are called in order: ``{id: P, op: P}``. Both
importers make it: :func:`ordered_block` from an exported graph's items, :func:`chained_body`
from torch.fx's calls of a ModuleList's children (an ``nn.Sequential``'s own forward is traced
as a block already: its children are its nodes ``0``, ``1``, ...).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from torch import fx

from archcomp.ops import all_ops

# ``Item`` and ``Walker`` are archcomp.importer.scopes' (not imported: scopes.py imports this)
Item = Any
Ordered = tuple[str, list[fx.Node], list[fx.Node], set[fx.Node]]


def run_length(items: list[Item], i: int) -> tuple[str, int, int] | None:
    """``(P, length, numbered)``: the items from ``i`` whose ids are ``P.<part>`` with the
    numbered parts ``0``, ``1``, ... in order (a channels-first norm's permutes between them);
    None where ``P.0`` is not among them."""
    m = re.fullmatch(r"([A-Za-z_]\w*)\.(\w+)", items[i].id, re.ASCII)
    if m is None:
        return None
    prefix, j, count = m.group(1), i, 0
    while j < len(items):
        part = re.fullmatch(rf"{re.escape(prefix)}\.(\w+)", items[j].id, re.ASCII)
        if part is None or (part.group(1).isdigit() and int(part.group(1)) != count):
            break
        count += part.group(1).isdigit()
        j += 1
    return (prefix, j - i, count) if count else None


def ordered_block(run: list[Item], w: Any, prefix: str, emit: Callable[..., Any]) -> Ordered | None:
    """``(block, inputs, outputs, calls)`` of one call of a block whose nodes are ``run`` (ids
    without ``prefix.``; ``emit`` makes a body of items), in order; None where its body
    cannot be made (the walker lists why)."""
    if any("tie" in x.extra for x in run):
        return None  # a tie is relative to this level: one level down it would not hold
    flat, live = w.flat, w.live()
    calls: set[fx.Node] = set().union(*(x.calls for x in run))
    made = {o for x in run for o in x.outs}
    given: list[fx.Node] = []
    for x in run:
        for a in x.ins.values() if isinstance(x.ins, dict) else x.ins:
            if a not in made and a not in given:
                given.append(a)
    outs = [
        o
        for x in run
        for o in x.outs
        if o in flat.outputs or any(u not in calls and u in live for u in flat.users.get(o, []))
    ]
    if not outs:
        return None
    names = [flat.inputs.get(g) or ("x" if k == 0 else f"x_{k + 1}") for k, g in enumerate(given)]
    inner = [dataclasses.replace(x, id=x.id[len(prefix) + 1 :]) for x in run]
    before = len(w.problems)
    body = emit(w, inner, given, names, outs)
    if len(w.problems) > before:
        return None
    body["shapes"] = f"{w.shapes(given)} -> {w.shapes(outs)}"
    return named(prefix, body, w.blocks, w.keys), given, outs, calls


def named(prefix: str, body: dict[str, Any], blocks: dict[str, Any], keys: dict[str, str]) -> str:
    """The block of ``body`` (one per distinct body), named ``prefix`` (``_2``, ... where that
    is taken, or is an op's name)."""
    key = f"ordered:{prefix}:" + json.dumps(body, sort_keys=True, default=str)
    if key not in keys:
        name, n = prefix, 2
        while name in blocks or name in all_ops():
            name, n = f"{prefix}_{n}", n + 1
        keys[key], blocks[name] = name, body
    return keys[key]


def chained_body(copies: list[tuple[str, dict[str, Any]]], shared: int) -> dict[str, Any]:
    """The body of copies ``(op, args)`` called each on the one before (torch.fx's ModuleList
    loop), the ``shared`` other inputs read by every copy: nodes ``0``, ``1``, ... in order."""
    inputs = ["x", *(f"x_{j + 2}" for j in range(shared))]
    nodes = []
    for k, (op, args) in enumerate(copies):
        entry: dict[str, Any] = {"id": str(k), "op": op}
        if shared:
            entry["in"] = ["x" if k == 0 else str(k - 1), *inputs[1:]]
        nodes.append(entry | args)
    return {"inputs": inputs, "nodes": nodes, "outputs": str(len(copies) - 1)}
