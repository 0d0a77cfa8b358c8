"""Copies of a repeat whose bodies call different blocks (Swin's stages: layers of other widths,
heads and map sizes, a patch merging only some have), as one block with params.

:func:`merge_nested` merges the copies' bodies node by node, as :mod:`archcomp.importer.unify`
does, but where a node's arguments differ it makes each a param of the merged block (``"${
reshape_shape}"``, lists too) whose value each copy's call passes, and where the nodes call
different blocks it merges those blocks the same way, their params passed on by the node. A node
some copies lack, or whose own ``when`` differs, is on by a param ``<id>_when``. The values a
repeated node's copies take by their own ``index`` (``"${[0, 2][index]}"``, the shift of a
stage's layers) become one list per copy, read at ``index`` inside (``"${shift[index]}"``), so
the outer repeat's ``index`` picks the list: ``"${[[0, 2], [0, 0]][index]}"``.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from archcomp.importer.unify import _agree, _in, _refs, _rest, aligned
from archcomp.ops import all_ops

Body = dict[str, Any]
_PICK = re.compile(r"^\$\{(\[.*\])\[index(?: % (\d+))?\]\}$")
_MISSING = object()


def merge_nested(run: list[Any], w: Any) -> tuple[str, dict[str, Any]] | None:
    """The merged block of a run of block calls ``P.0``, ``P.1``, ... (``w``: the walker) and
    the arguments its repeat passes; None where the copies cannot be one."""
    if any(it.opts for it in run) or not all(it.op in w.blocks for it in run):
        return None
    made = _lift([w.blocks[it.op] for it in run], w)
    if made is None:
        return None
    body, values = made
    call: dict[str, Any] = {}
    for p in body.get("params", {}):
        vals = [v[p] for v in values]
        if any(_expr(v) for v in vals):
            return None  # a value of the copy's own index at this level: nothing reads it
        call[p] = vals[0] if all(v == vals[0] for v in vals) else _per_copy(vals)
    return _register(w, body, run[0].op), call


def _lift(bodies: list[Body], w: Any) -> tuple[Body, list[dict[str, Any]]] | None:
    """One body with params for what differs, and each copy's values of them."""
    first = bodies[0]
    got = aligned(bodies) if not any(b.get("params") for b in bodies) else None
    if got is None:
        return None
    byid, ins, order = got
    lift = _Params(len(bodies))
    nodes: list[dict[str, Any]] = []
    passes: dict[str, Any] = {}
    prev = first["inputs"][0] if first["inputs"] else None
    for nid in order:
        here = [nid in m for m in byid]
        entry = _node(nid, here, byid, w, lift)
        choice = _in(nid, here, ins, byid, passes) if entry is not None else None
        if entry is None or choice is None:
            return None
        passes[nid] = choice if isinstance(choice, str) else next(iter(_refs(choice)), None)
        if choice != prev:
            entry = {"id": entry["id"], "op": entry["op"], "in": choice} | entry
        nodes.append(entry)
        prev = nid
    outs = [b["outputs"] for b in bodies]
    if _agree(outs[0], [True] * len(bodies), outs, byid, passes) is None:
        return None  # an absent node's value is its first input's
    body: Body = {"params": lift.defaults, "inputs": first["inputs"], "nodes": nodes}
    body |= {"outputs": first["outputs"], "shapes": first.get("shapes")}
    return body, lift.values


class _Params:
    """The params a merged body declares and each copy's values of them."""

    def __init__(self, copies: int) -> None:
        self.defaults: dict[str, Any] = {}
        self.values: list[dict[str, Any]] = [{} for _ in range(copies)]

    def add(self, name: str, vals: list[Any], care: list[bool] | None = None) -> str:
        """The param of these per-copy values (``care``: the copies whose value counts, not
        those where the node is off): an earlier one with the same values, or a new one."""
        care = care or [True] * len(vals)
        for known in self.defaults:  # one param per distinct set of values (a map's side)
            had = self.values
            if all(repr(had[c].get(known)) == repr(v) for c, v in enumerate(vals) if care[c]):
                return known
        base, k = re.sub(r"\W", "_", name), 2
        base = f"node{base}" if base[:1].isdigit() else base  # node '1' of a Sequential
        name = base
        while name in self.defaults:
            name, k = f"{base}_{k}", k + 1
        self.defaults[name] = next((v for v in vals if not _expr(v)), _first_pick(vals))
        for c, v in enumerate(vals):
            self.values[c][name] = v
        return name


def _node(
    nid: str, here: list[bool], byid: list[dict[str, Any]], w: Any, lift: _Params
) -> dict[str, Any] | None:
    """The merged entry of node ``nid`` (no ``in``), its differing arguments made params."""
    present = [m[nid] for m in byid if nid in m]
    rows = [_rest(n) for n in present]
    ops = {n["op"] for n in present}
    op = present[0]["op"]
    if len(ops) > 1:  # different blocks: merged too, their params passed on by this node
        if not all(o in w.blocks for o in ops):
            return None
        inner = _lift([w.blocks[n["op"]] for n in present], w)
        if inner is None or any(set(r) & set(v) for r, v in zip(rows, inner[1], strict=True)):
            return None
        op = _register(w, inner[0], op)
        rows = [r | v for r, v in zip(rows, inner[1], strict=True)]
    own = iter([r.pop("when", True) for r in rows])
    whens = [next(own) if h else False for h in here]
    it = iter(rows)
    full = [next(it) if h else dict(rows[0]) for h in here]  # an absent copy: off, any values
    entry: dict[str, Any] = {"id": nid, "op": op}
    if any(v is not True for v in whens):
        same = all(v == whens[0] for v in whens)
        entry["when"] = whens[0] if same else f"${{{lift.add(f'{nid}_when', whens)}}}"
    fields = all_ops()[op].args.model_fields if op in all_ops() else {}
    repeats = [r.get("repeat") for r in full]
    for key in dict.fromkeys(k for r in full for k in r):
        default = fields[key].default if key in fields else _MISSING
        vals = [r.get(key, default) for r in full]
        if any(v is _MISSING for v in vals) or key == "tie":
            return None if any(v != vals[0] for v in vals) else _same(entry, key, vals[0])
        if all(v == vals[0] for v in vals):
            entry[key] = vals[0]
            continue
        if not all(_plain(v) for v in vals):
            return None  # a mapping or null per copy (a RoPE some layers lack): no param value
        name = key if key not in fields and key not in ("repeat", "tie") else f"{nid}_{key}"
        if _same_length(vals):  # [-1, H, W, C]: a param per size that differs, not per list
            entry[key] = [
                col[0] if len(set(col)) == 1 else f"${{{lift.add(f'{name}{j}', col, here)}}}"
                for j, col in enumerate(map(list, zip(*vals, strict=True)))
            ]
            continue
        lists = _by_copy(vals, repeats) if key != "repeat" else None
        if lists is not None and lists is not vals:  # the repeat's copies read their own
            entry[key] = f"${{{lift.add(name, lists, here)}[index]}}"
        else:
            entry[key] = f"${{{lift.add(name, vals, here)}}}"
    return entry


def _same(entry: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    entry[key] = value
    return entry


def _by_copy(vals: list[Any], repeats: list[Any]) -> list[Any] | None:
    """Each copy's values of a repeated node's argument as a list over its own copies, where
    some read ``index``; ``vals`` itself where none does."""
    if not any(_expr(v) for v in vals):
        return vals
    out = []
    for v, n in zip(vals, repeats, strict=True):
        if not isinstance(n, int):
            return None
        m = _PICK.match(v) if isinstance(v, str) else None
        if _expr(v) and m is None:
            return None
        listed = ast.literal_eval(m.group(1)) if m is not None else None
        period = int(m.group(2)) if m is not None and m.group(2) else None
        if listed is None:
            out.append([v] * n)
        else:
            out.append([listed[j % (period or len(listed))] for j in range(n)])
    return out


def _first_pick(vals: list[Any]) -> Any:
    m = _PICK.match(vals[0]) if isinstance(vals[0], str) else None
    return ast.literal_eval(m.group(1))[0] if m is not None else 0


def _same_length(vals: list[Any]) -> bool:
    """Lists of one length whose items are literal scalars."""
    if not all(isinstance(v, list) and len(v) == len(vals[0]) for v in vals):
        return False
    return all(isinstance(x, bool | int | float) for v in vals for x in v)


def _plain(v: Any) -> bool:
    """A value a param may take: a scalar, or a list of them (a reshape's shape)."""
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    return isinstance(v, bool | int | float | str)


def _expr(v: Any) -> bool:
    return isinstance(v, str) and "${" in v


def _per_copy(values: list[Any]) -> str:
    return "${[" + ", ".join(repr(v) for v in values) + "][index]}"


def _register(w: Any, body: Body, base_op: str) -> str:
    key = "lifted:" + json.dumps(body, sort_keys=True, default=str)
    if key not in w.keys:
        base = re.sub(r"_?\d+$", "", base_op) or base_op
        name, n = base, 2
        while name in w.blocks:
            name, n = f"{base}_{n}", n + 1
        w.keys[key], w.blocks[name] = name, body
    return str(w.keys[key])
