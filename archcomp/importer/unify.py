"""Copies of a repeat that differ, as one block whose nodes read the copy's ``index``.

A stage of ResNet runs ``layers.0`` (stride 2 and a projection shortcut) then ``layers.1``,
``layers.2`` (stride 1, none); torch numbers them as one ModuleList, so their parameters are
``layers.0.*``, ``layers.1.*``, which only a ``repeat`` names. :func:`unify` merges the copies'
bodies into one: a node every copy has, with the same arguments, stays as it is; an argument
that differs becomes ``"${[2, 1, 1][index]}"``; a node some copies lack gets ``when:
"${[True, False, False][index]}"`` (an absent node passes its first input on, so ``add`` of
``[bn2, downsample]`` reads ``x`` in the copies without it). A node whose op (or block)
differs between copies becomes alternatives, one node of that id per op, each with its
``when`` (DeepSeek-V3's ``mlp``: a dense MLP block in the first layers, ``mixture_of_experts``
in the others). Copies that differ in any other way do not merge (None): the importer then
refuses them.
"""

from __future__ import annotations

from typing import Any

from archcomp.ops import all_ops

Body = dict[str, Any]
_SCALARS = (bool, int, float, str)


def unify_ops(ops: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """The arguments of one repeated op node for copies with these (op, args); None when the
    ops differ or an argument is not a scalar."""
    if len({op for op, _ in ops}) != 1:
        return None
    return _args(ops[0][0], [a for _, a in ops], [True] * len(ops))


def aligned(
    bodies: list[Body],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]] | None:
    """The copies' nodes by id, what each node reads, and the merged order of their ids;
    None where the copies take other inputs or order their nodes apart."""
    if any(b["inputs"] != bodies[0]["inputs"] for b in bodies):
        return None
    byid = [{n["id"]: n for n in b["nodes"]} for b in bodies]
    ins = [_explicit(b) for b in bodies]
    order = _merged([[n["id"] for n in b["nodes"]] for b in bodies])
    return None if order is None else (byid, ins, order)


def unify(bodies: list[Body]) -> Body | None:
    """One body for the copies, reading ``index``; None where they cannot be one."""
    got = aligned(bodies)
    if got is None:
        return None
    byid, ins, order = got
    nodes: list[dict[str, Any]] = []
    passes: dict[str, Any] = {}  # node id -> the first input it passes on where absent
    prev = bodies[0]["inputs"][0] if bodies[0]["inputs"] else None
    for nid in order:
        present = [m[nid] for m in byid if nid in m]
        ops = list(dict.fromkeys(n["op"] for n in present))
        firsts: set[Any] = set()
        for op in ops:  # several: alternatives, one node of this id per op, each by 'when'
            here = [nid in m and m[nid]["op"] == op for m in byid]
            choice = _in(nid, here, ins, byid, passes)
            if choice is None:
                return None
            firsts.add(choice if isinstance(choice, str) else next(iter(_refs(choice)), None))
            args = _args(op, [_rest(m[nid]) for m, h in zip(byid, here, strict=True) if h], here)
            if args is None:
                return None
            entry: dict[str, Any] = {"id": nid, "op": op}
            if choice != prev:
                entry["in"] = choice
            if not all(here):
                entry["when"] = _pick(here) if len(ops) == 1 else _split(here)
            nodes.append(entry | args)
            prev = nid
        if len(firsts) != 1 and not all(nid in m for m in byid):
            return None  # absent in some copy: what passes on there must be one value
        passes[nid] = firsts.pop()
    outs = [b["outputs"] for b in bodies]
    if _agree(outs[0], [True] * len(bodies), outs, byid, passes) is None:
        return None
    return {"inputs": bodies[0]["inputs"], "nodes": nodes, "outputs": outs[0]}


def _explicit(body: Body) -> dict[str, Any]:
    """Node id -> what it reads, the implicit previous node written out."""
    out: dict[str, Any] = {}
    prev = body["inputs"][0] if body["inputs"] else None
    for n in body["nodes"]:
        out[n["id"]] = n.get("in", prev)
        prev = n["id"]
    return out


def _merged(orders: list[list[str]]) -> list[str] | None:
    merged: list[str] = []
    for ids in orders:
        pos = 0
        for nid in ids:
            if nid in merged:
                at = merged.index(nid)
                if at < pos:
                    return None  # two copies order their nodes differently
                pos = at + 1
            else:
                merged.insert(pos, nid)
                pos += 1
    return merged


def _refs(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    return list(v.values()) if isinstance(v, dict) else list(v)


def _resolve(ref: str, m: dict[str, Any], passes: dict[str, Any]) -> str | None:
    """What ``ref`` is in one copy (``m``: its nodes): an absent node, its first input."""
    seen = 0
    while ref in passes and ref not in m and seen < 10_000:
        if passes[ref] is None:
            return None
        ref, seen = passes[ref], seen + 1
    base = ref.split(".", 1)[0]
    if "." in ref and base in passes and base not in m:
        return None  # another result of an absent node: nothing passes it on
    return ref


def _same(a: Any, b: Any, m: dict[str, Any], passes: dict[str, Any]) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and set(a) != set(b):
        return False
    ra, rb = _refs(a), _refs(b)
    return len(ra) == len(rb) and all(
        _resolve(x, m, passes) == _resolve(y, m, passes) for x, y in zip(ra, rb, strict=True)
    )


def _agree(
    cand: Any, here: list[bool], own: list[Any], byid: list[dict[str, Any]], passes: dict[str, Any]
) -> Any:
    ok = all(_same(cand, own[c], byid[c], passes) for c in range(len(own)) if here[c])
    return cand if ok else None


def _in(
    nid: str,
    here: list[bool],
    ins: list[dict[str, Any]],
    byid: list[dict[str, Any]],
    passes: dict[str, Any],
) -> Any:
    """The ``in`` that reads, in every copy with the node, what that copy's node reads."""
    own = [ins[c].get(nid) for c in range(len(ins))]
    for c in range(len(ins)):
        if here[c] and _agree(own[c], here, own, byid, passes) is not None:
            return own[c]
    return None


def _rest(n: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in n.items() if k not in ("id", "op", "in")}


def _args(op: str, present: list[dict[str, Any]], here: list[bool]) -> dict[str, Any] | None:
    """Arguments equal in every copy as they are, others as a list read at ``index``."""
    fields = all_ops()[op].args.model_fields if op in all_ops() else {}
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for n in present for k in n):
        if key not in fields and any(key not in n for n in present):
            return None  # a block call's or a node's own key (repeat, tie) that some lack
        vals = [n.get(key, fields[key].default if key in fields else None) for n in present]
        if all(v == vals[0] for v in vals):
            if key in present[0]:
                out[key] = vals[0]
            continue
        if key in ("repeat", "tie", "when") or not all(
            isinstance(v, _SCALARS) and not _expr(v) for v in vals
        ):
            return None
        it = iter(vals)
        per = [next(it) if h else None for h in here]
        out[key] = _pick([v if v is not None else vals[0] for v in per])
    return out


def _split(here: list[bool]) -> str:
    """An alternative's ``when``: ``${index < 1}`` (or ``>=``) where it is the copies before
    (or from) one index, so a deeper stack keeps the rule; else the copy's value."""
    k = here.index(not here[0])  # a copy has it and another not
    if here == [here[0]] * k + [not here[0]] * (len(here) - k):
        return f"${{index {'<' if here[0] else '>='} {k}}}"
    return _pick(here)


def _expr(v: Any) -> bool:
    return isinstance(v, str) and "${" in v


def _pick(values: list[Any]) -> str:
    """``${[2, 1, 1][index]}``: the copy's value."""
    return "${[" + ", ".join(repr(v) for v in values) + "][index]}"


def used(blocks: dict[str, Body], body: Body) -> dict[str, Body]:
    """The blocks ``body`` calls, directly or through others (a copy merged into one block
    leaves its own behind), in their order."""
    keep: set[str] = set()
    todo = [body]
    while todo:
        for n in todo.pop()["nodes"]:
            if n["op"] in blocks and n["op"] not in keep:
                keep.add(n["op"])
                todo.append(blocks[n["op"]])
    kept = {k: v for k, v in blocks.items() if k in keep}
    return _renamed(kept, body)


def _renamed(blocks: dict[str, Body], body: Body) -> dict[str, Body]:
    """``residual_3`` as ``residual`` where the copies it merged were the only others."""
    import re

    names: dict[str, str] = {}
    for k in blocks:
        m = re.fullmatch(r"(.+)_(\d+)", k)
        base = m.group(1) if m else ""
        alone = sum(1 for x in blocks if re.fullmatch(rf"{re.escape(base)}_\d+", x)) == 1
        if base and base not in blocks and base not in names.values() and alone:
            names[k] = base
    for b in (body, *blocks.values()):
        for n in b["nodes"]:
            n["op"] = names.get(n["op"], n["op"])
    return {names.get(k, k): v for k, v in blocks.items()}
