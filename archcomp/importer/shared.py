"""Weights shared across blocks: a module's weight that is another module's, where the owner
is outside the block the module is in (BART's and T5's encoder and decoder ``embed_tokens``,
whose weight is ``model.shared.weight``).

The tie goes up to the first body that sees both: the call of the block holding the tied node
gets ``tie: {embed_tokens.weight: shared.weight}`` (a tie into the call, as an ``init`` of a
call reaches its nodes). An owner no forward calls (``model.shared``) is a ``parameter`` node of
its parent's body: the same key (``shared.weight``), kept by the ties that read it. A bare
parameter that a child's parameter is (BERT's ``cls.predictions.bias``, its ``decoder.bias``) is
a ``parameter`` node keyed by itself (``key: self``) and the child's tie reads it:
``{id: decoder, op: linear, tie: {bias: bias}}``.
"""

from __future__ import annotations

from torch import nn

from archcomp.importer.exported import Flat


def shared_params(model: nn.Module) -> dict[str, str]:
    """Each parameter key that names an earlier key's tensor -> that first key, its owner's
    (``lm_head.weight`` -> ``model.embed_tokens.weight``: a tied LM head)."""
    seen: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        first = seen.setdefault(id(p), name)
        if first != name:
            out[name] = first
    return out


def shared_ties(model: nn.Module) -> dict[str, dict[str, str]]:
    """Module path -> ``{param: owner key}`` of its parameters that are an earlier module's
    tensor: ``{"lm_head": {"weight": "model.embed_tokens.weight"}}``."""
    out: dict[str, dict[str, str]] = {}
    for name, owner in shared_params(model).items():
        path, _, attr = name.rpartition(".")
        out.setdefault(path, {})[attr] = owner
    return out


def tie_owners(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The key a shared parameter has first (its owner's) -> its shape, for each parameter
    reached under several names."""
    return {o: tuple(model.get_parameter(o).shape) for o in shared_params(model).values()}


def uncalled_owners(flat: Flat, path: str) -> list[tuple[str, tuple[int, ...]]]:
    """(id, shape) of each child of ``path`` that owns a shared ``weight`` and that no call ran
    in (``model.shared``): a ``parameter`` node of ``path``'s body."""
    prefix = f"{path}." if path else ""
    called = {s for scopes in flat.scope.values() for s in scopes}
    found = []
    for key, shape in tie_owners(flat.model).items():
        module, _, param = key.rpartition(".")
        rel = module[len(prefix) :]
        child = param == "weight" and module.startswith(prefix) and rel and "." not in rel
        if child and module not in called:
            found.append((rel, shape))
    return found


def own_owners(flat: Flat, path: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each bare parameter of the module at ``path`` that another parameter
    is (BERT's ``cls.predictions.bias``, which ``cls.predictions.decoder.bias`` is): a
    ``parameter`` node of ``path``'s body keyed by itself."""
    prefix = f"{path}." if path else ""
    module = flat.model.get_submodule(path)
    own = {n for n, p in module.named_parameters(recurse=False)}
    return [
        (key[len(prefix) :], shape)
        for key, shape in tie_owners(flat.model).items()
        if key.startswith(prefix) and key[len(prefix) :] in own
    ]


def lifted_ties(lifted: dict[str, str], path: str, child: str) -> dict[str, str]:
    """The ties of nodes inside the call ``child`` (``lifted``: a tied parameter's key -> its
    owner's, both full) whose owner the body at ``path`` sees, relative to it; taken out of
    ``lifted`` (the others go further up)."""
    prefix = f"{path}." if path else ""
    got = {}
    for key, owner in list(lifted.items()):
        if key.startswith(child + ".") and owner.startswith(prefix):
            got[key[len(child) + 1 :]] = owner[len(prefix) :]
            del lifted[key]
    return got
