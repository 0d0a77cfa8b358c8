"""The aten graph of ``torch.export`` read back into the module hierarchy.

Every call of an exported graph carries ``nn_module_stack``: the module paths it ran in, outer to
inner. :class:`Flat` reads the graph once: which calls merely pass their input on (a cast to the
same dtype, ``alias``, ``contiguous``, a full slice), which are *context* (computed from no input
and no parameter: the causal mask, the positions, RoPE's cos/sin tables), and which module path
each call ran in. :mod:`archcomp.importer.scopes` then walks the paths one level at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

_PASS = {
    "aten.alias.default",
    "aten.contiguous.default",
    "aten.clone.default",
    "aten.detach.default",
    "aten.lift_fresh_copy.default",
}
CASTS = {"aten.to.dtype", "aten.to.dtype_layout", "aten.to.device", "aten._to_copy.default"}
_NO_VALUE = {"aten._assert_tensor_metadata.default", "aten._assert_scalar.default"}
BIG = 1 << 62  # a slice's end past any size: torch writes sys.maxsize


def _path(raw: str) -> str:
    """``L['self'].model.layers[0]`` (strict export) or ``model.layers.0`` -> ``model.layers.0``."""
    s = raw.removeprefix("L['self']").removeprefix(".")
    return re.sub(r"\[(\d+)\]", r".\1", s).replace("._modules['", ".").replace("']", "")


def _val(n: Any) -> Any:
    return n.meta.get("val") if isinstance(n, fx.Node) else None


@dataclass
class Flat:
    """An exported program, read: calls in order with their module paths, pass-throughs and
    context resolved, placeholders named."""

    model: nn.Module
    graph: fx.Graph
    order: list[fx.Node] = field(default_factory=list)  # calls that compute, in graph order
    scope: dict[fx.Node, tuple[str, ...]] = field(default_factory=dict)
    canon: dict[fx.Node, fx.Node] = field(default_factory=dict)  # pass-through -> its input
    weights: dict[fx.Node, str] = field(default_factory=dict)  # placeholder -> state_dict key
    inputs: dict[fx.Node, str] = field(default_factory=dict)  # user placeholder -> arg name
    context: set[fx.Node] = field(default_factory=set)
    users: dict[fx.Node, list[fx.Node]] = field(default_factory=dict)  # canonical uses
    outputs: list[Any] = field(default_factory=list)
    # padding masks of an input (archcomp/importer/padding.py): a chain's end -> the input,
    # and each call of a chain -> its end
    padding: dict[fx.Node, fx.Node] = field(default_factory=dict)
    padded: dict[fx.Node, fx.Node] = field(default_factory=dict)
    causal: dict[fx.Node, int] = field(default_factory=dict)  # causal padding masks' windows
    examples: dict[str, Any] = field(default_factory=dict)  # input name -> its example value
    unread: set[fx.Node] = field(default_factory=set)  # causal mask inputs: no node reads them

    @classmethod
    def read(cls, ep: Any, model: nn.Module) -> Flat:
        flat = cls(model, ep.graph)
        sig = ep.graph_signature
        named = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        for n in ep.graph.nodes:
            if n.op == "placeholder":
                if n.name in named:
                    flat.weights[n] = named[n.name]
                    if n.name in sig.inputs_to_buffers:
                        flat.context.add(n)  # a buffer: RoPE's inv_freq, a mask table
                elif isinstance(_val(n), torch.Tensor):
                    flat.inputs[n] = n.name
                else:
                    flat.context.add(n)  # a non-tensor argument (use_cache=False)
            elif n.op == "call_function":
                flat._call(n)
            elif n.op == "output":
                flat.outputs = [flat.get(a) for a in _flatten(n.args[0])]
        return flat

    def get(self, n: Any) -> Any:
        """The node whose value ``n`` has (following pass-throughs)."""
        while isinstance(n, fx.Node) and n in self.canon:
            n = self.canon[n]
        return n

    def args_of(self, n: fx.Node) -> list[fx.Node]:
        """The canonical nodes ``n`` reads."""
        return [self.get(a) for a in n.all_input_nodes if self.get(a) is not None]

    def _call(self, n: fx.Node) -> None:
        t = str(n.target)
        if t in _NO_VALUE:
            return
        passes = _full_slice(n) or _eval_dropout(n, t) or _same_view(n) or _no_pad(n, t)
        if t in _PASS or self._same_cast(n, t) or passes:
            self.canon[n] = n.args[0]  # type: ignore[assignment]
            return
        stack = n.meta.get("nn_module_stack") or {}
        self.scope[n] = tuple(_path(v[0]) for v in stack.values() if _path(v[0]))
        self.order.append(n)
        ins = self.args_of(n)
        if all(a in self.context for a in ins) and not any(a in self.inputs for a in ins):
            self.context.add(n)  # from constants and buffers only: arange, masks, cos/sin
        for a in ins:
            self.users.setdefault(a, []).append(n)

    @staticmethod
    def _same_cast(n: fx.Node, t: str) -> bool:
        a, v = _val(n.args[0]) if n.args else None, _val(n)
        return (
            t in CASTS
            and isinstance(a, torch.Tensor)
            and isinstance(v, torch.Tensor)
            and a.dtype == v.dtype
        )

    def source(self, n: fx.Node) -> str:
        from archcomp.importer.trace import source_line

        return source_line(n)


def _full_slice(n: fx.Node) -> bool:
    """``x[:, 0:]``: aten.slice from 0 to past the end with step 1 (HF's logits_to_keep=0)."""
    if str(n.target) != "aten.slice.Tensor":
        return False
    args: list[Any] = [*n.args, None, None, None, None][:5]
    _, dim, start, end, step = args
    x = _val(n.args[0])
    if not isinstance(x, torch.Tensor):
        return False
    size = int(x.shape[dim if isinstance(dim, int) else 0])
    whole = end is None or (isinstance(end, int) and end >= size)
    return bool(start in (0, None) and whole and step in (1, None))


def _same_view(n: fx.Node) -> bool:
    """``ids.view(-1, T)`` of a (B, T) tensor: a view to the shape it has (GPT-2's flattening of
    its input and unflattening of its output)."""
    if str(n.target) not in ("aten.view.default", "aten.reshape.default"):
        return False
    a, v = _val(n.args[0]), _val(n)
    return isinstance(a, torch.Tensor) and isinstance(v, torch.Tensor) and a.shape == v.shape


def _no_pad(n: fx.Node, t: str) -> bool:
    """``F.pad(x, (0, 0, 0, 0))``: Swin pads to whole windows even where it adds nothing."""
    pad = n.args[1] if len(n.args) > 1 else None
    return t == "aten.pad.default" and isinstance(pad, list | tuple) and not any(pad)


def _eval_dropout(n: fx.Node, t: str) -> bool:
    return t == "aten.dropout.default" and (len(n.args) < 3 or n.args[2] is False)


def _flatten(v: Any) -> list[Any]:
    if isinstance(v, tuple | list):
        return [x for item in v for x in _flatten(item)]
    return [v]


def export_model(model: nn.Module, kwargs: dict[str, Any]) -> Any:
    """``torch.export.export(model, (), kwargs, strict=False)``; torch's refusal, one line."""
    from archcomp.base.errors import UsageError

    try:
        return torch.export.export(model, (), kwargs, strict=False)
    except Exception as e:  # torch.export's reasons are many; the first line says which
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"torch.export cannot trace {type(model).__name__}: {first}") from None
