"""``unused: true`` on the ``parameter`` and ``buffer`` nodes of an imported body that no node
reads: a module's tensor its traced forward never reads (transformers' DINOv2
``embeddings.mask_token``, read only with ``bool_masked_pos``) is still held, so the module's
whole ``state_dict`` loads strictly (docs/spec-format.md's ``unused-node`` exemption)."""

from __future__ import annotations

from typing import Any

_HELD = ("parameter", "buffer")


def _names(v: Any) -> set[str]:
    """The node ids a reference (``x``, ``split.out0``), a list or a mapping of them names."""
    if isinstance(v, str):
        return {v.split(".")[0]}
    if isinstance(v, list):
        return set().union(*(_names(x) for x in v)) if v else set()
    if isinstance(v, dict):
        return _names(list(v.values()))
    return set()


def read_ids(body: dict[str, Any]) -> set[str]:
    """The ids the body's nodes, ties and outputs read; a node without ``in`` reads the node
    before it (the first input for the first), a ``parameter`` or ``buffer`` nothing."""
    read = _names(body.get("outputs"))
    prev = body["inputs"][0] if body.get("inputs") else None
    for n in body["nodes"]:
        if "in" in n:
            read |= _names(n["in"])
        elif n["op"] not in _HELD and prev is not None:
            read.add(prev)
        read |= _names(list(n.get("tie", {}).values()))
        prev = n["id"]
    return read


def mark_unread(body: dict[str, Any]) -> dict[str, Any]:
    """The body with ``unused: true`` on each parameter or buffer node nothing reads."""
    read = read_ids(body)
    nodes = [
        n | {"unused": True} if n["op"] in _HELD and n["id"] not in read else n
        for n in body["nodes"]
    ]
    return body | {"nodes": nodes}


def unread_tensors(module: Any, read: set[int], taken: set[str]) -> list[dict[str, Any]]:
    """A node for each parameter and persistent float buffer of ``module`` itself whose tensor
    is none of ``read`` (the ids of the tensors some node holds or reads) and whose name is no
    id in ``taken``: ``{id: <name>, op: parameter (or buffer), shape, key: self, unused:
    true}`` (``trainable: false`` for a frozen one), so the ``state_dict`` loads strictly."""
    out = []
    for name, p in module.named_parameters(recurse=False):
        if id(p) not in read and _free(name, taken):
            frozen = {} if p.requires_grad else {"trainable": False}
            out.append(_node(name, "parameter", p.shape) | frozen)
    skip: set[str] = getattr(module, "_non_persistent_buffers_set", set())
    for name, b in module.named_buffers(recurse=False):
        if id(b) not in read and name not in skip and b.is_floating_point() and _free(name, taken):
            out.append(_node(name, "buffer", b.shape))
    return out


def _node(name: str, op: str, shape: Any) -> dict[str, Any]:
    return {"id": name, "op": op, "shape": [int(s) for s in shape], "key": "self", "unused": True}


def child_tensors(module: Any) -> set[int]:
    """The ids of the tensors of ``module``'s children (a tie makes one of them its own)."""
    return {id(t) for c in module.children() for t in (*c.parameters(), *c.buffers())}


def _free(name: str, taken: set[str]) -> bool:
    from archcomp.frontend.schema import reserved_id

    return name.isidentifier() and not reserved_id(name) and name not in taken


def read_tensors(flat: Any) -> set[int]:
    """The ids of the tensors an exported graph reads (its placeholders that have a user)."""
    state = flat.model.state_dict(keep_vars=True)
    return {id(state[k]) for a, k in flat.weights.items() if flat.users.get(a) and k in state}
