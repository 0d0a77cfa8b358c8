"""A model's outputs by name: what ``archcomp.from_pretrained``'s model returns.

transformers' models return a ``ModelOutput``: ``out.logits``, ``out["logits"]``, ``out[0]``.
:class:`ModelOutput` is the same for an archcomp model, with the spec's output names in the
spec's order (``logits``; CLIP's ``logits_per_image`` and ``logits_per_text``; Dinov2's
``last_hidden_state``). As transformers' (a dict), iterating it gives the names;
``to_tuple()`` gives the values.

:func:`return_outputs` makes a built model's forward return one: a last node of its fx graph
calls :func:`model_output`, so ``torch.compile(model, fullgraph=True)`` traces it and
``torch.export`` keeps it (the class is a registered pytree node). ``archcomp.build`` leaves
the forward as it is (a tensor, or a dict for several outputs).
"""

from __future__ import annotations

from typing import Any

from torch import fx
from torch.utils import _pytree as pytree


class ModelOutput(dict[str, Any]):
    """A model's outputs by name, in the spec's order: ``out.logits``, ``out["logits"]``,
    ``out[0]`` (the first output), ``out.to_tuple()``. A dict: ``for name in out`` and
    ``out.items()`` as any dict, which transformers' ``ModelOutput`` also is."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            known = ", ".join(self) or "none"
            message = f"the model has no output '{name}' (its outputs: {known})"
            raise AttributeError(message) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        return self.to_tuple()[key]

    def to_tuple(self) -> tuple[Any, ...]:
        """The outputs' values, in order."""
        return tuple(self.values())

    def __repr__(self) -> str:
        return f"ModelOutput({', '.join(f'{k}={v!r}' for k, v in self.items())})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ModelOutput, (list(self.items()),))


def model_output(names: tuple[str, ...], *values: Any) -> ModelOutput:
    """``ModelOutput(name=value, ...)``: the call the last node of a model's graph makes."""
    return ModelOutput(zip(names, values, strict=True))


def _flatten(out: ModelOutput) -> tuple[list[Any], list[str]]:
    return list(out.values()), list(out.keys())


def _flatten_with_keys(out: ModelOutput) -> tuple[list[tuple[Any, Any]], list[str]]:
    return [(pytree.MappingKey(k), v) for k, v in out.items()], list(out.keys())


def _unflatten(values: Any, names: Any) -> ModelOutput:
    return ModelOutput(zip(names, values, strict=True))


pytree.register_pytree_node(
    ModelOutput,
    _flatten,
    _unflatten,
    serialized_type_name="archcomp.ModelOutput",
    flatten_with_keys_fn=_flatten_with_keys,
)


def return_outputs(model: Any) -> Any:
    """Make ``model`` (an ArchModule) return a :class:`ModelOutput` of its outputs by name;
    ``model.return_dict`` then says so. Returns the model."""
    if getattr(model, "return_dict", False):
        return model
    graph: fx.Graph = model.graph
    end = next(n for n in reversed(graph.nodes) if n.op == "output")
    value = end.args[0]
    names = tuple(model.output_names)
    values = [value[k] for k in names] if isinstance(value, dict) else [value]
    with graph.inserting_before(end):
        made = graph.call_function(model_output, (names, *values))
    end.args = (made,)
    model.recompile()
    model.return_dict = True
    return model
