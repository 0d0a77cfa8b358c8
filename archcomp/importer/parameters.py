"""Bare ``nn.Parameter``s (and buffers) a module reads in its own forward, as ``parameter`` (and
``buffer``) nodes keyed by their own name.

ViT's ``self.cls_token.expand(B, -1, -1)`` and ``embeddings + self.position_embeddings``,
DINOv2's ``hidden_state * self.lambda1``, ConvNeXt's ``self.layer_scale_parameter * x``: the
exported graph reads such a tensor as a placeholder whose state_dict key is the module's path and
the attribute's name. Each becomes ``{id: <name>, op: parameter, shape: [...], key: self}``
(its key is the node id itself, so the module's ``state_dict`` still loads by its own names),
placed before the first call that reads it; a buffer of its own (BART's ``final_logits_bias``)
likewise ``{id: final_logits_bias, op: buffer, shape: [...], key: self}``. ``aten.expand`` of a
tensor to the batch becomes ``expand`` with ``shape: [B, -1, ...]`` and ``like`` the other
operand of what reads it. A
module whose whole forward is ``x * self.<gain>`` (DINOv2's ``Dinov2LayerScale``) is one
``layer_scale`` with ``gain_name: <gain>``.
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
    """A bare parameter (or buffer) of the module at a path: its node id, shape, whether it
    trains, and for a buffer whether it is saved and the one value it is filled with."""

    name: str
    shape: list[int]
    trainable: bool
    op: str = "parameter"
    persistent: bool = True
    fill: float = 0.0

    def opts(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"shape": self.shape, "key": "self"}
        if self.op == "buffer":
            fill = {"init_value": self.fill} if self.fill else {}
            return opts | fill | ({} if self.persistent else {"persistent": False})
        return opts if self.trainable else opts | {"trainable": False}


def own_tensor(flat: Flat, path: str, a: fx.Node) -> OwnTensor | str | None:
    """``a`` as a bare parameter or buffer of the module at ``path`` (its key
    ``<path>.<name>``), why such a buffer is not one, or None (a child's weight, a name no node
    id may be)."""
    import re

    key = flat.weights.get(a)
    if key is None:
        return None
    prefix = f"{path}." if path else ""
    name = key[len(prefix) :] if key.startswith(prefix) else ""
    if not re.match(_IDENT, name) or reserved_id(name):
        return None
    if a in flat.context:  # a buffer (exported graphs hold buffers as context)
        return own_buffer(flat.model.get_submodule(path) if path else flat.model, name)
    try:
        p = flat.model.get_parameter(key)
    except AttributeError:
        return None
    if not isinstance(p, nn.Parameter):
        return None
    return OwnTensor(name, [int(s) for s in p.shape], p.requires_grad)


def own_buffer(module: nn.Module, name: str) -> OwnTensor | str | None:
    """The buffer ``name`` of ``module`` itself as a ``buffer`` node (``key: self``): a
    persistent float one (its values load from the state dict), or one outside the state dict
    whose entries are all one value (``init_value``); else why not (None: no such buffer)."""
    b = module._buffers.get(name)
    if b is None:
        return None
    if not b.is_floating_point():
        return f"a buffer of {str(b.dtype).removeprefix('torch.')} (the buffer op holds floats)"
    persistent = name not in module._non_persistent_buffers_set
    fill = 0.0
    if not persistent:
        if b.is_meta:  # import --hf builds on the meta device
            return "a buffer outside the state dict, whose values the meta device does not hold"
        first = b.flatten()[0] if b.numel() else None
        if first is None or not bool((b == first).all()):
            return "a buffer outside the state dict whose values are not one constant"
        fill = float(first)
    return OwnTensor(name, [int(s) for s in b.shape], False, "buffer", persistent, fill)


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


_GAIN_TAKEN = {"num_features", "dim", "init_value", "gain_name", "gain", "training"}


def layer_scale_of(flat: Flat, module: nn.Module, group: list[fx.Node]) -> tuple[str, dict] | None:
    """``layer_scale`` (``gain_name`` its parameter's name) for a module without children whose
    one call multiplies its input by its one 1-D parameter along the last dim; else None."""
    params = dict(module.named_parameters())
    if any(True for _ in module.children()) or len(params) != 1 or len(group) != 1:
        return None
    (name, p), n = next(iter(params.items())), group[0]
    if str(n.target) != "aten.mul.Tensor" or p.dim() != 1 or name in _GAIN_TAKEN:
        return None
    args = flat.args_of(n)
    gains = [a for a in args if a in flat.weights and flat.weights[a].endswith(f".{name}")]
    xs = [a for a in args if a not in gains]
    shape = list(getattr(xs[0].meta.get("val"), "shape", ())) if len(xs) == 1 else []
    if len(gains) != 1 or not shape or int(shape[-1]) != p.shape[0]:
        return None
    return "layer_scale", ({} if name == "gamma" else {"gain_name": name})
