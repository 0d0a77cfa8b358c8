"""Copies of a repeated layer that differ in a few op arguments (Gemma 2's sliding and global
layers: ``window: 4`` on every other one): one block with those arguments as params, called
with ``repeat`` and a per-copy value ``"${[4, 0][index % 2]}"`` (the shortest period).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from archcomp.ops import all_ops

_NUMBERED = re.compile(r"^([A-Za-z_]\w*)\.(\d+)$")
_MISSING = object()


def merge_alternating(items: list[Any], w: Any) -> list[Any]:
    """Rewrite runs ``P.0``, ``P.1``, ... of block calls whose bodies differ only in op
    arguments into calls of one block with per-copy values (``w``: the walker)."""
    i = 0
    while i < len(items):
        m = _NUMBERED.match(items[i].id)
        n = 1
        if m is not None and m.group(2) == "0":
            while i + n < len(items) and items[i + n].id == f"{m.group(1)}.{n}":
                n += 1
        run = items[i : i + n]
        if n > 1 and len({it.op for it in run}) > 1 and all(it.op in w.blocks for it in run):
            _merge(run, w)
        i += n
    return items


def _merge(run: list[Any], w: Any) -> None:
    bodies = [w.blocks[it.op] for it in run]
    diffs = _differences(bodies)
    if diffs is None or any(it.opts for it in run):
        return  # bodies that differ otherwise: the repeat is refused by path
    merged = copy.deepcopy(bodies[0])
    params = dict(merged.get("params") or {})
    call: dict[str, Any] = {}
    for (k, arg), values in diffs.items():
        node = merged["nodes"][k]
        name = arg if arg not in params and arg not in call else f"{node['id']}_{arg}"
        node[arg] = f"${{{name}}}"
        params[name] = values[0]
        call[name] = _per_copy(values)
    merged["params"] = params
    first, others = run[0].op, {it.op for it in run} - {run[0].op}
    w.blocks[first] = merged
    for it in run:
        it.op, it.opts = first, dict(call)
    for name in others:  # called by these copies only: a block is made per distinct body
        w.blocks.pop(name, None)


def _differences(bodies: list[dict[str, Any]]) -> dict[tuple[int, str], list[Any]] | None:
    """(node index, argument) -> each copy's value, where only op arguments (scalars) differ;
    None where inputs, outputs, ids or ops differ."""
    first = bodies[0]
    if any(
        b["inputs"] != first["inputs"]
        or b["outputs"] != first["outputs"]
        or len(b["nodes"]) != len(first["nodes"])
        for b in bodies
    ):
        return None
    out: dict[tuple[int, str], list[Any]] = {}
    for k, node in enumerate(first["nodes"]):
        nodes = [b["nodes"][k] for b in bodies]
        if any(
            (x["id"], x["op"], x.get("in")) != (node["id"], node["op"], node.get("in"))
            for x in nodes
        ):
            return None
        fields = all_ops()[node["op"]].args.model_fields if node["op"] in all_ops() else {}
        for arg in {a for x in nodes for a in x} - {"id", "op", "in"}:
            default = fields[arg].default if arg in fields else _MISSING
            values = [x.get(arg, default) for x in nodes]
            if any(v is _MISSING or isinstance(v, dict | list) for v in values):
                if len({repr(v) for v in values}) > 1:
                    return None
                continue
            if len(set(values)) > 1:
                out[(k, arg)] = values
    return out


def _per_copy(values: list[Any]) -> str:
    """``${[4, 0][index % 2]}``: the values of one period, indexed by the copy."""
    p = next(p for p in range(1, len(values) + 1) if all(
        v == values[j % p] for j, v in enumerate(values)))  # fmt: skip
    listed = "[" + ", ".join(repr(v) for v in values[:p]) + "]"
    return f"${{{listed}[index % {p}]}}" if p < len(values) else f"${{{listed}[index]}}"
