"""Attention masks of torch.nn's transformer modules, judged on the example's values.

``nn.TransformerEncoder`` and ``nn.TransformerDecoder`` ask whether their mask is causal by its
values (``_detect_is_causal_mask``: ``(mask == causal).all()``), which torch.export cannot trace.
:func:`pinned_causal_detection` runs the module once on the example inputs, records each answer,
and gives torch.export the same answers in the same order: a mask judged causal on the example
is then SDPA's ``is_causal`` in the graph (and ``causal: true`` in the spec). A hint
(``is_causal=True``, ``tgt_is_causal=True``) given with a mask that is not causal on the example
is refused: torch would then ignore the mask's values on some paths and read them on others.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules import transformer as _tm

from archcomp.base.errors import UsageError

_ASKING = (nn.TransformerEncoder, nn.TransformerDecoder)  # the modules that call the detection


def causal_values(v: Any) -> bool:
    """Whether ``v`` is a causal attention mask as torch.nn's attention takes one: square over
    its last two dims (more than one position), keys after the query hidden (bool True, or a
    large negative added) and the others kept (bool False, or 0 added)."""
    if not isinstance(v, torch.Tensor) or v.dim() < 2 or v.shape[-1] != v.shape[-2]:
        return False
    if v.shape[-1] < 2:
        return False
    keep = torch.ones(v.shape[-2:], dtype=torch.bool, device=v.device).tril()
    if v.dtype == torch.bool:
        return bool((v == ~keep).all())
    return bool((v[..., keep] == 0).all() and (v[..., ~keep] <= -1e4).all())


@contextmanager
def pinned_causal_detection(module: nn.Module, inputs: dict[str, Any]) -> Iterator[None]:
    """Within it, torch's causal-mask detection answers as it did on ``inputs``
    (:func:`_answers`); nothing is patched where the module never asks."""
    answers = _answers(module, inputs)
    if not answers:
        yield
        return
    original, replay = _tm._detect_is_causal_mask, iter(answers)

    def pinned(mask: Any, is_causal: Any = None, size: Any = None) -> bool:
        return next(replay, is_causal is True)  # the calls come in the eager run's order

    _tm._detect_is_causal_mask = pinned  # type: ignore[assignment]
    try:
        yield
    finally:
        _tm._detect_is_causal_mask = original


def _answers(module: nn.Module, inputs: dict[str, Any]) -> list[bool]:
    """torch's detection answers, in call order, of one eager run on ``inputs`` (no gradients,
    the random state and buffers, BatchNorm's running stats, restored); none where the module
    holds no encoder or decoder or does not run so. A causal hint with a mask that is not causal
    raises UsageError."""
    if not any(isinstance(m, _ASKING) for m in module.modules()):
        return []
    original = _tm._detect_is_causal_mask
    answers: list[bool] = []

    def record(mask: Any, is_causal: Any = None, size: Any = None) -> bool:
        if is_causal is True and mask is not None and not original(mask, None, size):
            raise UsageError(
                "a causal hint (is_causal=True / tgt_is_causal=True) given with a mask that is "
                "not causal on the example: torch ignores the mask's values on some paths only; "
                "pass the causal mask (nn.Transformer.generate_square_subsequent_mask), or no hint"
            )
        answers.append(bool(original(mask, is_causal, size)))
        return answers[-1]

    kept = {k: b.clone() for k, b in module.named_buffers()}
    _tm._detect_is_causal_mask = record  # type: ignore[assignment]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            module(**inputs)
    except UsageError:
        raise
    except Exception:  # the example does not run eagerly: export reports why
        answers.clear()
    finally:
        _tm._detect_is_causal_mask = original
        with torch.no_grad():
            for k, b in module.named_buffers():
                b.copy_(kept[k])
    return answers


def fold_float_padding(flat: Any) -> None:
    """torch's float copy of a bool key_padding_mask input, ``zeros_like(p, dtype=float)
    .masked_fill_(p, -inf)`` (``F._canonical_mask``: nn.TransformerEncoder makes it), read only
    by nn.MultiheadAttention: the bool mask itself, which the attention's key_padding_mask port
    takes with the same meaning (True hides a key)."""
    for n in list(flat.order):
        p = _padding_source(flat, n)
        users = flat.users.get(n, [])
        if p is None or not users or not all(in_mha(flat, u) for u in users):
            continue
        flat.canon[n] = p
        flat.users.setdefault(p, []).extend(users)


def _padding_source(flat: Any, n: Any) -> Any:
    """The bool (B, S) input ``p`` where ``n`` is ``masked_fill_(zeros_like(p), p, -inf)``."""
    if str(n.target) not in ("aten.masked_fill_.Scalar", "aten.masked_fill.Scalar"):
        return None
    base, p, fill = (*n.args, None, None, None)[:3]
    base, p = flat.get(base), flat.get(p)
    if (
        str(getattr(base, "target", "")) != "aten.zeros_like.default"
        or flat.get(base.args[0]) is not p
    ):
        return None
    val = getattr(p, "meta", {}).get("val")
    ok = isinstance(val, torch.Tensor) and val.dtype == torch.bool and val.ndim == 2
    return p if ok and p in flat.inputs and fill == float("-inf") else None


def in_mha(flat: Any, n: Any) -> bool:
    """Whether call ``n`` ran inside an nn.MultiheadAttention."""
    return any(
        isinstance(flat.model.get_submodule(p), nn.MultiheadAttention)
        for p in flat.scope.get(n, ())
    )


__all__ = ["causal_values", "fold_float_padding", "in_mha", "pinned_causal_detection"]
