"""Bare ``nn.Parameter``s a module reads in its own forward, as ``parameter`` nodes keyed by
their own name.

ViT's ``self.cls_token.expand(B, -1, -1)`` and ``embeddings + self.position_embeddings``,
DINOv2's ``hidden_state * self.lambda1``, ConvNeXt's ``self.layer_scale_parameter * x``: the
exported graph reads such a tensor as a placeholder whose state_dict key is the module's path and
the attribute's name. Each becomes ``{id: <name>, op: parameter, shape: [...], key: self}``
(its key is the node id itself, so the module's ``state_dict`` still loads by its own names),
placed before the first call that reads it; ``aten.expand`` of a tensor to the batch becomes
``expand`` with ``shape: [B, -1, ...]`` and ``like`` the other operand of what reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import fx, nn

from archcomp.frontend.schema import reserved_id

# ``flat`` below is an archcomp.importer.exported.Flat (not imported: exported.py imports the
# torch.fx importer, which imports this module)
Flat = Any

_EXPAND = "aten.expand.default"
_IDENT = r"^[A-Za-z_]\w*$"


@dataclass(frozen=True)
class OwnTensor:
    """A bare parameter of the module at a path: its node id, shape and whether it trains."""

    name: str
    shape: list[int]
    trainable: bool

    def opts(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"shape": self.shape, "key": "self"}
        return opts if self.trainable else opts | {"trainable": False}


def own_tensor(flat: Flat, path: str, a: fx.Node) -> OwnTensor | None:
    """``a`` as a bare parameter of the module at ``path`` (its key ``<path>.<name>``), or None
    (a buffer, a child's weight, a name no node id may be)."""
    import re

    key = flat.weights.get(a)
    if key is None or a in flat.context:
        return None
    prefix = f"{path}." if path else ""
    name = key[len(prefix) :] if key.startswith(prefix) else ""
    if not re.match(_IDENT, name) or reserved_id(name):
        return None
    try:
        p = flat.model.get_parameter(key)
    except AttributeError:
        return None
    if not isinstance(p, nn.Parameter):
        return None
    return OwnTensor(name, [int(s) for s in p.shape], p.requires_grad)


def expand_to_batch(
    flat: Flat, n: fx.Node, batch: tuple[int, str] | None
) -> tuple[fx.Node | None, dict[str, Any]] | str:
    """``aten.expand(x, sizes)`` as ``expand``'s ``like`` input and options: a size equal to
    x's own is -1, the traced batch size is the batch's name (taken from ``like`` at run time),
    any other size literal. ``like`` is the other operand of the call that reads the result
    (ViT's ``torch.cat((cls_tokens, embeddings), 1)``)."""
    x, sizes = flat.get(n.args[0]), n.args[1]
    if not isinstance(sizes, (list, tuple)) or not all(isinstance(s, int) for s in sizes):
        return "an expand to sizes read from tensors"
    have = list(getattr(x.meta.get("val"), "shape", ()))
    new = len(sizes) - len(have)
    shape: list[int | str] = []
    for i, s in enumerate(sizes):
        own = have[i - new] if i >= new else None
        if s == -1 or (own is not None and s == int(own)):
            shape.append(-1)
        elif batch is not None and i == 0 and s == batch[0]:
            shape.append(batch[1])
        else:
            shape.append(int(s))
    if batch is None or batch[1] not in shape:
        return None, {"shape": shape}
    for u in flat.users.get(n, []):
        for other in flat.args_of(u):
            v = other.meta.get("val")
            lead = list(getattr(v, "shape", ()))
            if other is not n and lead and int(lead[0]) == batch[0]:
                return other, {"shape": shape}
    return "an expand to the batch size with no batched operand beside it"
