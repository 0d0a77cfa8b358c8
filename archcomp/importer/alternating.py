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
    from archcomp.importer.params import ORDER

    bodies = [w.blocks[it.op] for it in run]
    diffs = _differences(bodies)
    if diffs is None or any(it.opts for it in run):
        return  # bodies that differ otherwise: the repeat is refused by path
    merged = copy.deepcopy(bodies[0])
    params = dict(merged.get("params") or {})
    call: dict[str, Any] = {}
    for (k, *path), values in diffs.items():
        node = merged["nodes"][k]
        name = "_".join(path)
        if name in params or name in call or name in ORDER:  # the config's names stay its own
            name = f"{node['id']}_{name}"
        holder = node
        for j, key in enumerate(path[:-1]):  # a mapping copy 0 leaves out: another copy's
            if key not in holder:
                holder[key] = copy.deepcopy(_first_with(bodies, k, path[: j + 1]))
            holder = holder[key]
        holder[path[-1]] = f"${{{name}}}"
        params[name] = values[0]
        call[name] = _per_copy(values)
    merged["params"] = params
    first, others = run[0].op, {it.op for it in run} - {run[0].op}
    w.blocks[first] = merged
    for it in run:
        it.op, it.opts = first, dict(call)
    for name in others:  # called by these copies only: a block is made per distinct body
        w.blocks.pop(name, None)


def _first_with(bodies: list[dict[str, Any]], k: int, path: list[str]) -> dict[str, Any]:
    """The mapping at ``path`` of node ``k`` in the first body that has it."""
    for b in bodies:
        v: Any = b["nodes"][k]
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if isinstance(v, dict):
            return v
    return {}


def _absent(arg: str, present: list[dict[str, Any]]) -> dict[str, Any]:
    """An argument mapping some copies leave out, as a value that computes the same: beside
    RoPE's linear scaling, linear by 1.0 (the plain frequencies, divided by one)."""
    if arg == "scaling" and all(p.get("type") == "linear" for p in present):
        return {"type": "linear", "factor": 1.0}
    return {}


def _differences(bodies: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[Any]] | None:
    """(node index, argument path...) -> each copy's value, where only op arguments (scalars,
    or scalars in argument mappings) differ; None where inputs, outputs, ids or ops differ."""
    first = bodies[0]
    if any(
        b["inputs"] != first["inputs"]
        or b["outputs"] != first["outputs"]
        or len(b["nodes"]) != len(first["nodes"])
        for b in bodies
    ):
        return None
    out: dict[tuple[Any, ...], list[Any]] = {}
    for k, node in enumerate(first["nodes"]):
        nodes = [b["nodes"][k] for b in bodies]
        same = (node["id"], node["op"], node.get("in"))
        if any((x["id"], x["op"], x.get("in")) != same for x in nodes):
            return None
        fields = all_ops()[node["op"]].args.model_fields if node["op"] in all_ops() else {}
        args = [{a: v for a, v in x.items() if a not in ("id", "op", "in")} for x in nodes]
        defaults = {a: f.default for a, f in fields.items()}
        if not _leaves(args, defaults, (k,), out):
            return None
    return out


def _leaves(
    maps: list[dict[str, Any]], defaults: dict[str, Any], at: tuple[Any, ...], out: dict[Any, Any]
) -> bool:
    """Record the scalar values that differ between ``maps`` (one per copy), recursing into
    argument mappings; False where lists differ or a value has no default to stand for it."""
    for arg in sorted({a for x in maps for a in x}):
        values = [x.get(arg, defaults.get(arg, _MISSING)) for x in maps]
        if any(isinstance(v, dict) for v in values):
            if any(v not in (None, _MISSING) and not isinstance(v, dict) for v in values):
                return False
            absent = _absent(arg, [v for v in values if isinstance(v, dict)])
            subs = [v if isinstance(v, dict) else absent for v in values]
            if not _leaves(subs, {}, (*at, arg), out):
                return False
            continue
        if len({repr(v) for v in values}) > 1:
            if any(v is _MISSING or v is None or isinstance(v, list) for v in values):
                return False  # no value to write for a copy (specs have no null params)
            out[(*at, arg)] = values
    return True


def _per_copy(values: list[Any]) -> str:
    """``${[4, 0][index % 2]}``: the values of one period, indexed by the copy."""
    p = next(p for p in range(1, len(values) + 1) if all(
        v == values[j % p] for j, v in enumerate(values)))  # fmt: skip
    listed = "[" + ", ".join("null" if v is None else repr(v) for v in values[:p]) + "]"
    return f"${{{listed}[index % {p}]}}" if p < len(values) else f"${{{listed}[index]}}"
