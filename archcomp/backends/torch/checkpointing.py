"""Repeated blocks as units of work: the copies FSDP shards and activation checkpointing
recomputes.

:func:`repeated_blocks` lists the outermost copies of repeated blocks (the
:class:`~archcomp.backends.torch.module.CompiledBlock` instances held in ``nn.ModuleList``
containers, ``h_.0`` .. ``h_.11`` in GPT-2). :func:`checkpoint_blocks` makes each of them run
under non-reentrant activation checkpointing (``torch.utils.checkpoint``,
``use_reentrant=False``): the instance's class becomes a subclass of its generated class whose
``forward`` calls the generated one through ``checkpoint``. No wrapper module is added, so the
module tree, ``named_parameters`` and the state-dict keys are unchanged.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.checkpoint import checkpoint

from archcomp.backends.torch.handoff import take
from archcomp.backends.torch.module import CompiledBlock, tied_names


def repeated_blocks(model: nn.Module) -> list[tuple[str, CompiledBlock]]:
    """(path, module) of each outermost copy of a repeated block, in module order."""
    out: list[tuple[str, CompiledBlock]] = []

    def visit(prefix: str, m: nn.Module, parent: nn.Module | None) -> None:
        if isinstance(m, CompiledBlock) and isinstance(parent, nn.ModuleList):
            out.append((prefix, m))
            return  # nested repeats run inside this copy's unit
        for name, child in m.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child, m)

    visit("", model, None)
    return out


def fsdp_units(model: nn.Module) -> list[str]:
    """Paths of the modules :func:`archcomp.distributed.shard` wraps before the root: each
    outermost copy of a repeated block, except a copy holding a weight tied to one outside it
    (it stays in the root's unit, so the tie is one parameter of one unit)."""
    blocks = [p for p, _ in repeated_blocks(model)]

    def unit_of(key: str) -> str:
        return next((p for p in blocks if key.startswith(p + ".")), "")

    crossing: set[str] = set()
    for alias, first in tied_names(model).items():
        a, b = unit_of(alias), unit_of(first)
        if a != b:
            crossing.update(u for u in (a, b) if u)
    return [p for p in blocks if p not in crossing]


class _Checkpointed:
    """Mixin of the checkpointing subclasses: ``forward`` runs the block under checkpoint."""

    activation_checkpointing = True

    def forward(self, *args: Any) -> Any:
        inner = super().forward  # type: ignore[misc]
        # the recompute needs the inputs again: a handed-over list is emptied by the first run
        return checkpoint(inner, *take(args), use_reentrant=False)


_SUBCLASSES: dict[type, type] = {}


def checkpoint_blocks(model: nn.Module) -> list[str]:
    """Run each repeated block of ``model`` under activation checkpointing; return their
    paths. Idempotent; keys, parameters and outputs are unchanged."""
    paths = []
    for path, block in repeated_blocks(model):
        cls = type(block)
        if not getattr(cls, "activation_checkpointing", False):
            sub = _SUBCLASSES.get(cls)
            if sub is None:
                attrs = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
                sub = _SUBCLASSES[cls] = type(cls.__name__, (_Checkpointed, cls), attrs)
            block.__class__ = sub
        paths.append(path)
    return paths


def is_checkpointed(block: nn.Module) -> bool:
    return bool(getattr(type(block), "activation_checkpointing", False))
