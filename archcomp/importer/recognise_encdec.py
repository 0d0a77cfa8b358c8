"""What encoder-decoders add to the transformers recogniser (:mod:`.recognise`):

- cross-attention: q_proj reads the decoder's stream, k_proj and v_proj the encoder's output,
  so the node takes ``in: {query, key, value}`` (:func:`attention_ports`);
- q scaled before SDPA (Whisper, BART: ``q_proj(x) * scaling``, then SDPA with ``scale=1``),
  folded into the attention's ``scale`` (:func:`q_scaling`);
- learned positions (an ``nn.Embedding`` looked up at positions computed from no input: BART's
  offset 2, Whisper's), added to one input: ``learned_positional_encoding`` with that add
  (:func:`positions`). The positions are evaluated on the example sizes: ``arange(T) +
  offset`` in each row, or refused.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import fx, nn

from archcomp.importer.exported import Flat

_MUL = "aten.mul.Tensor"
_SDPA = "aten.scaled_dot_product_attention.default"
_LOOKUPS = {"aten.embedding.default", "aten.index.Tensor"}


def _outside_input(flat: Flat, path: str, child: str, group: list[fx.Node]) -> fx.Node | None:
    """The value the projection ``child`` of the attention at ``path`` reads."""
    calls = [n for n in group if flat.scope[n][-1:] == (f"{path}.{child}",)]
    if not calls:
        return None
    ins = [a for a in flat.args_of(calls[0]) if a not in flat.weights]
    return ins[0] if ins else None


def attention_ports(flat: Flat, path: str, group: list[fx.Node]) -> dict[str, fx.Node] | None:
    """``{query, key, value}`` where q_proj reads another value than k_proj and v_proj
    (cross-attention); None for self-attention."""
    q, k, v = (_outside_input(flat, path, p, group) for p in ("q_proj", "k_proj", "v_proj"))
    if q is None or k is None or v is None or q is k:
        return None
    return {"query": q, "key": k, "value": v}


def q_scaling(flat: Flat, path: str, level: list[fx.Node]) -> tuple[list[fx.Node], float | None]:
    """The attention's own calls without a ``mul`` of q_proj's output by a number, and that
    number (None where q is not scaled so)."""
    q_out = {n for n in flat.order if flat.scope.get(n, ())[-1:] == (f"{path}.q_proj",)}
    for n in level:
        if str(n.target) != _MUL or len(n.args) != 2:
            continue
        x, c = n.args
        if flat.get(x) in q_out and isinstance(c, numbers.Real) and not isinstance(c, bool):
            return [m for m in level if m is not n], float(c)
    return level, None


def sdpa_scale(sdpa: fx.Node, head_dim: int) -> float:
    """The score scale SDPA applies: its ``scale`` argument, else 1/sqrt(head_dim)."""
    s = sdpa.kwargs.get("scale", sdpa.args[6] if len(sdpa.args) > 6 else None)
    return float(s) if isinstance(s, numbers.Real) else head_dim**-0.5


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


def positions(
    flat: Flat, m: nn.Module, group: list[fx.Node]
) -> tuple[str, dict[str, Any]] | str | None:
    """``learned_positional_encoding`` for an embedding looked up at positions computed from no
    input (``_absorb``: the add of its result to one input becomes the node); None for any
    other module."""
    if not isinstance(m, nn.Embedding):
        return None
    looks = [n for n in group if str(n.target) in _LOOKUPS]
    idx = [a for n in looks for a in flat.args_of(n) if a not in flat.weights]
    if len(looks) != 1 or not idx or not all(a in flat.context for a in idx):
        return None  # looked up at the input's tokens: an embedding
    rows = evaluate(flat, idx[0])
    if rows is None or rows.dim() == 0:
        return "positions that cannot be evaluated from the example's sizes"
    rows = rows.reshape(-1, rows.shape[-1])  # (rows, L)
    off = int(rows[0, 0])
    want = torch.arange(rows.shape[-1]) + off
    if not all(torch.equal(r.cpu().long(), want) for r in rows):
        return "positions other than arange(T) + offset"
    if len(group) != 1:
        return "a positional embedding that computes more than its lookup"
    return "learned_positional_encoding", {
        "max_len": m.num_embeddings - off,
        "offset": off,
        "_absorb": True,
    }


def scaled_embedding(m: nn.Module, group: list[fx.Node]) -> tuple[str, dict[str, Any]] | str | None:
    """BART's ``*ScaledWordEmbedding``: an embedding times ``embed_scale`` (1, or
    sqrt(embedding_dim): the embedding op's ``scale``); None for any other module."""
    if not (isinstance(m, nn.Embedding) and type(m).__name__.endswith("ScaledWordEmbedding")):
        return None
    from archcomp.importer.leaves import LEAVES

    made = LEAVES[nn.Embedding](m)
    scale = getattr(m, "embed_scale", None)
    ops = {str(n.target) for n in group}
    if isinstance(made, str) or not isinstance(scale, float) or ops - {_MUL, *_LOOKUPS}:
        return made if isinstance(made, str) else "a scaled embedding computing more than a scale"
    if close(scale, math.sqrt(m.embedding_dim)):
        made[1]["scale"] = True
    elif scale != 1.0:
        return f"an embedding scale of {scale} (the embedding op's scale is sqrt(embedding_dim))"
    return made


def rms_class(m: nn.Module) -> bool:
    """A transformers RMS norm by its class: ``*RMSNorm``, or T5's ``T5LayerNorm`` (an RMS
    norm without mean or bias, whatever its name says)."""
    name = type(m).__name__
    return name.endswith("RMSNorm") or name == "T5LayerNorm"


def keeps_all(flat: Flat, mask: Any) -> bool:
    """Whether a mask computed from no input hides nothing on the example's sizes: all True
    (bool) or all zero (additive)."""
    v = evaluate(flat, mask)
    if not isinstance(v, torch.Tensor):
        return False
    return bool(v.all()) if v.dtype == torch.bool else bool((v == 0).all())


def causal_mask(flat: Flat, mask: Any) -> bool:
    """Whether a mask computed from no input is the causal one on the example's sizes (CLIP's
    text tower: ``create_causal_mask`` given to an attention whose ``is_causal`` is False):
    keys up to the query's position kept (True, or 0 added), every later one hidden (False, or
    a large negative added), over square scores of more than one position."""
    v = evaluate(flat, mask)
    if not isinstance(v, torch.Tensor) or v.dim() < 2 or v.shape[-1] != v.shape[-2]:
        return False
    if v.shape[-1] < 2:
        return False
    keep = torch.ones(v.shape[-2:], dtype=torch.bool).tril()
    if v.dtype == torch.bool:
        return bool((v == keep).all())
    return bool((v[..., keep] == 0).all() and (v[..., ~keep] <= -1e4).all())


def absorbed_add(flat: Flat, out: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """``(x, add)`` where ``out``'s one use is ``x + out`` (or ``out + x``)."""
    users = flat.users.get(out, [])
    if len(users) != 1 or str(users[0].target) != "aten.add.Tensor":
        return None
    add = users[0]
    others = [a for a in flat.args_of(add) if a is not out]
    if len(others) != 1 or add.kwargs.get("alpha", 1) != 1:
        return None
    return others[0], add


def evaluate(flat: Flat, n: fx.Node, memo: dict[fx.Node, Any] | None = None) -> Any:
    """The value of a context node on CPU (positions, masks: computed from constants and the
    example's sizes); None where it reads a parameter, a buffer or an input."""
    memo = {} if memo is None else memo
    n = flat.get(n)
    if n in memo:
        return memo[n]
    if n.op == "placeholder":
        val = n.meta.get("val")
        return None if isinstance(val, torch.Tensor) else val
    if n.op != "call_function":
        return None
    ok = True

    def arg(a: Any) -> Any:
        nonlocal ok
        v = evaluate(flat, a, memo)
        ok = ok and (v is not None or a.op == "placeholder")
        return v

    args = fx.node.map_arg(n.args, arg)
    kwargs = {k: v for k, v in fx.node.map_arg(n.kwargs, arg).items()}  # type: ignore[union-attr]
    if not ok:
        return None
    if kwargs.get("device") is not None:
        kwargs["device"] = torch.device("cpu")
    target: Any = n.target
    if target is torch.ops.aten.view.default:  # its contiguous() passed: a view may not do
        target = torch.ops.aten.reshape.default
    try:
        value = target(*args, **kwargs)
    except Exception:  # an op that does not run on CPU values: not evaluable
        return None
    memo[n] = value
    return value


__all__ = [
    "absorbed_add",
    "attention_ports",
    "causal_mask",
    "evaluate",
    "keeps_all",
    "positions",
    "q_scaling",
    "rms_class",
    "scaled_embedding",
    "sdpa_scale",
]
