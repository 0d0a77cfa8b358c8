"""Import: a PyTorch module back into a readable archcomp spec (docs/import.md).

:func:`import_module` traces the module with torch.fx one level at a time, so the module
hierarchy stays: leaf modules and calls become op nodes, a child module with children of its
own becomes a block named after its class, and a ModuleList or Sequential of equal children
becomes one node with ``repeat``. Node ids are the module paths, so the module's own
``state_dict`` loads into the built spec with no mapping. What cannot be expressed is one
:class:`ImportFailure` that lists every unsupported call with the source line that made it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from archcomp.base.errors import UsageError

DimsArg = Mapping[str, int | tuple[str, int] | list[tuple[str, int]]]


class ImportFailure(UsageError):
    """The module uses calls archcomp cannot express; ``problems`` lists each one."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"cannot import: {len(problems)} unsupported call(s):\n{lines}")


def import_module(
    module: Any,
    example_inputs: Mapping[str, Any] | tuple[Any, ...],
    *,
    dims: DimsArg | None = None,
    name: str | None = None,
) -> str:
    """The spec of ``module`` as YAML text.

    ``example_inputs``: the forward's keyword arguments (a dict) or positional ones (a tuple);
    their shapes and dtypes become the spec's inputs. ``dims`` names symbolic dims: ``{"B": 0}``
    makes dim 0 of every input ``B``; ``{"T": ("ids", 1)}`` names dim 1 of input ``ids`` only,
    ``{"T": [("tgt", 1), ("tgt_mask", 0), ("tgt_mask", 1)]}`` several dims (over a bare index).
    """
    import torch

    from archcomp.importer.built import built_ops, built_ties
    from archcomp.importer.emit import spec_text
    from archcomp.importer.shared import shared_ties
    from archcomp.importer.trace import Importer, _snake
    from archcomp.importer.unify import used
    from archcomp.importer.verify import check_problems

    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"import_module takes an nn.Module, not {type(module).__name__}")
    bound = _bind(module, example_inputs)
    inputs = {k: v for k, v in bound.items() if isinstance(v, torch.Tensor)}
    flags = {k: v for k, v in bound.items() if k not in inputs}  # tgt_is_causal=True: constants
    built = isinstance(getattr(module, "node_meta", None), dict)  # made by archcomp.build
    shared = shared_ties(module)
    imp = Importer(built=built_ops(module), ties=shared | built_ties(module), handoff=built)
    imp.root, imp.inputs, imp.leading = module, inputs, _leading(inputs, dims or {})
    if flags:  # torch.fx would make them inputs: torch.export traces them as constants
        imp.problems.append(f"torch.fx cannot trace it: non-tensor arguments {sorted(flags)}")
        body = None
    else:
        body = imp.body(module, list(inputs), "")
    spec_name = name or _snake(type(module).__name__)
    shapes = {k: _input_decl(k, v, dims or {}) for k, v in inputs.items()}
    example = _example_dims(inputs, dims or {})
    blocks = imp.blocks
    untraced = any("torch.fx cannot trace it" in p for p in imp.problems)  # nn.Transformer
    mha = any(isinstance(m, torch.nn.MultiheadAttention) for m in module.modules())
    if imp.problems and (untraced or mha):  # torch.export's graph instead
        from archcomp.importer.by_export import exported_body

        made = exported_body(
            module, inputs, _leading(inputs, dims or {}), imp.problems, flags=flags
        )
        if isinstance(made, list):
            raise ImportFailure(made)
        blocks, body = made
        shapes = {k: v for k, v in shapes.items() if k in body["inputs"]}  # causal masks: none
    elif imp.problems or body is None:
        raise ImportFailure(imp.problems)
    elif set(shared) - imp.tied:  # a shared tensor no node's tie says: never two copies
        raise ImportFailure([_untied(p, shared[p]) for p in sorted(set(shared) - imp.tied)])
    else:
        blocks = used(imp.blocks, body)
    text = spec_text(spec_name, shapes, example, blocks, body, type(module).__qualname__)
    bad = check_problems(text)
    if bad:
        raise ImportFailure(bad)
    return text


def _untied(path: str, tie: dict[str, str]) -> str:
    pairs = ", ".join(f"{path}.{k} is {v}" for k, v in tie.items())
    return f"{path}: a tensor shared with another module ({pairs}) where no tie can say it"


def _bind(module: Any, example: Mapping[str, Any] | tuple[Any, ...]) -> dict[str, Any]:
    import torch

    sig = inspect.signature(module.forward)
    try:
        bound = (
            sig.bind(**example) if isinstance(example, Mapping) else sig.bind(*example)
        ).arguments
    except TypeError as e:
        raise UsageError(
            f"example_inputs do not fit {type(module).__name__}.forward: {e}"
        ) from None
    for k, v in bound.items():
        if not isinstance(v, torch.Tensor | bool | int | float | None):
            raise UsageError(
                f"example input {k!r} is {type(v).__name__}, not a tensor (or a bool, int, "
                "float or None, traced as a constant)"
            )
    return dict(bound)


def _dim_names(inp: str, rank: int, dims: DimsArg) -> dict[int, str]:
    """Dim index -> symbol for input ``inp``; a dim named by its input (``("tgt_mask", 0)``)
    over one named by a bare index (``{"B": 0}``: dim 0 of every input)."""
    out: dict[int, str] = {}
    located: list[tuple[str, str, int]] = []
    for sym, at in dims.items():
        if isinstance(at, int):
            if -rank <= at < rank:
                out[at % rank] = sym
        elif isinstance(at, list):  # several dims: [("tgt", 1), ("tgt_mask", 0), ...]
            located += [(sym, w, i) for w, i in at]
        else:
            located.append((sym, *at))
    for sym, where, i in located:
        if where == inp and -rank <= i < rank:
            out[i % rank] = sym
    return out


def _input_decl(inp: str, t: Any, dims: DimsArg) -> dict[str, Any]:
    names = _dim_names(inp, t.dim(), dims)
    decl: dict[str, Any] = {"shape": [names.get(i, s) for i, s in enumerate(t.shape)]}
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype != "float32":
        decl["dtype"] = dtype
    return decl


def _leading(inputs: dict[str, Any], dims: DimsArg) -> tuple[tuple[int, str], ...]:
    """The first input's leading named dims as (size, name), for shape comments."""
    name, t = next(iter(inputs.items()))
    names = _dim_names(name, t.dim(), dims)
    out: list[tuple[int, str]] = []
    while len(out) in names:
        out.append((int(t.shape[len(out)]), names[len(out)]))
    return tuple(out)


def _example_dims(inputs: dict[str, Any], dims: DimsArg) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for k, t in inputs.items():
        for i, sym in _dim_names(k, t.dim(), dims).items():
            sizes.setdefault(sym, int(t.shape[i]))
    missing = [s for s in dims if s not in sizes]
    if missing:
        raise UsageError(f"dims {missing} name no dim of the example inputs {sorted(inputs)}")
    return sizes


__all__ = ["ImportFailure", "import_module"]
