"""A static key/value cache for decoding with causal self-attention, as gpt-fast keeps one.

:class:`KVCache` holds, for every causal self-attention module of a model, keys (B, h_kv, L, d_k)
and values (B, h_kv, L, d_v) allocated once for a batch of B sequences of at most L tokens
(grouped-query and multi-query attention store their ``num_kv_heads`` heads only), and one
:class:`CacheState` the layers share: how many tokens the cache holds, their positions and which
slots are left padding. While a cache is bound to a model (:meth:`KVCache.bound`), attention
modules read and extend it and position modules (rotary, learned, sinusoidal) add the positions
of the new tokens instead of 0..T-1; every decoder spec gets the cached path from its ops alone.
An encoder-decoder's cache covers its decoder part (``scope``, the modules the decoder's forward
calls): causal self-attention as above (T5's causal relative bias at the cache's positions), and
each cross-attention a :class:`CrossKV` of the encoder output's keys and values, projected by
the first forward after a reset; ``encoder_outputs`` keeps what the encoder part gave.

Two ways to read it: ``static=False`` (eager) attends to the ``length + T`` slots written so far;
``static=True`` (for ``torch.compile``) attends to all L slots under a mask, writes at tensor
positions, and keeps every tensor's shape fixed, so one compiled decode step serves every token.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import fx, nn

from archcomp.nn.attention import MultiHeadAttention
from archcomp.nn.cache_state import CacheState, CrossKV, LayerKV
from archcomp.nn.positional import (
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    T5RelativePositionBias,
)

__all__ = ["CacheState", "CacheUnsupported", "KVCache", "LayerKV", "cache_layers"]


# sequence-mixing modules the cached path does not cover (their names, for the error)
UNSUPPORTED = {
    "MultiHeadLatentAttention": "latent attention (its compressed latent is not cached yet)",
    "SelectiveScan": "a state-space scan (Mamba's conv and scan state are not cached yet)",
    "ScaledDotProductAttention": "a bare scaled_dot_product_attention op",
    "T5RelativePositionBias": "a bidirectional relative position bias",
    "Conv1d": "a convolution along the sequence (its state, as Mamba's, is not cached yet)",
    "LSTM": "a recurrent layer",
    "GRU": "a recurrent layer",
    "RNN": "a recurrent layer",
    "MultiheadAttention": "torch.nn.MultiheadAttention",
}


# functions in generated code that mix positions or read a padding mask
UNSUPPORTED_CALLS = {
    "scaled_dot_product_attention": "a bare scaled_dot_product_attention op",
    "cumsum": "positions from a running sum (a padding mask)",
}


class CacheUnsupported(ValueError):
    """The model has a layer whose state the cache does not carry."""


def _attention_args(target: MultiHeadAttention, node: fx.Node) -> dict[str, Any]:
    """The arguments of an attention call by name (query, key, value, masks, score_bias)."""
    bound = inspect.signature(target.forward).bind(*node.args, **node.kwargs)
    return dict(bound.arguments)


def _check_attention(where: str, target: MultiHeadAttention, args: dict[str, Any]) -> None:
    """Causal self-attention (a score bias only from a cached relative position bias), or
    cross-attention to one tensor of the encoder's (keys and values the same, masks allowed)."""
    q, k, v = args["query"], args.get("key"), args.get("value")
    if not target.causal:  # in scope, so a decoder's: cross-attention
        if k is q or v is not k or args.get("score_bias") is not None:
            raise CacheUnsupported(
                f"{where}: a decoder's attention that is not causal must be cross-attention "
                "(other keys than its queries, keys and values the same, no score bias)"
            )
        return
    if k is not q or v is not q or any(args.get(m) is not None for m in _MASKS):
        raise CacheUnsupported(
            f"{where}: attention with other keys than its queries, or with masks or "
            "score biases, has no cached decoding yet"
        )


_MASKS = ("key_padding_mask", "mask")


def _check_calls(model: nn.Module, scope: Callable[[str], bool], biased: bool) -> None:
    """Refuse what the generated forwards (an fx graph per class) do outside the cached path:
    attention called with other keys than its queries, or with masks or biases (a score bias
    is allowed when ``biased``: the model's bias modules take the cache's positions), and
    functions that mix positions. Only modules ``scope`` admits are read."""
    seen: set[int] = set()
    for prefix, m in model.named_modules():
        graph = getattr(type(m), "graph", None) if not isinstance(m, fx.GraphModule) else m.graph
        if (
            not isinstance(graph, fx.Graph)
            or id(graph) in seen
            or not (scope(prefix) or m is model)
        ):
            continue  # a block class's forward is checked once, at its first instance in scope
        seen.add(id(graph))
        for node in graph.nodes:
            where = f"{prefix}.{node.name}" if prefix else node.name
            name = getattr(node.target, "__name__", str(node.target))
            target = m.get_submodule(str(node.target)) if node.op == "call_module" else None
            full = f"{prefix}.{node.target}" if prefix else str(node.target)
            if node.op == "call_module" and not scope(full):
                continue
            if node.op == "call_function" and name in UNSUPPORTED_CALLS:
                raise CacheUnsupported(f"{where}: {UNSUPPORTED_CALLS[name]} has no cached decoding")
            if isinstance(target, MultiHeadAttention):
                args = _attention_args(target, node)
                if args.get("score_bias") is not None and target.causal and biased:
                    args = {**args, "score_bias": None}
                _check_attention(where, target, args)


class CacheLayers(NamedTuple):
    """What a cache binds, by qualified name: causal self-attention (keys and values grow),
    cross-attention (the encoder's, projected once), positions and relative biases."""

    attention: list[tuple[str, MultiHeadAttention]]
    cross: list[tuple[str, MultiHeadAttention]]
    positions: list[tuple[str, Any]]


def in_scope(scope: Sequence[str] | None) -> Callable[[str], bool]:
    """Whether a qualified module name is under one of ``scope``'s (every name when None)."""
    if scope is None:
        return lambda name: True
    return lambda name: any(name == s or name.startswith(f"{s}.") for s in scope)


def cache_layers(model: nn.Module, scope: Sequence[str] | None = None) -> CacheLayers:
    """The layers a cache binds in ``model`` (the modules under ``scope``'s names, an
    encoder-decoder's decoder part; all when None); raises :class:`CacheUnsupported` naming
    the first layer the cached path does not cover. Outside a scope (a decoder alone), an
    attention that is not causal is refused; inside one it is cross-attention."""
    admit = in_scope(scope)
    found = CacheLayers([], [], [])
    for name, m in model.named_modules():
        if not admit(name):
            continue
        kind = type(m).__name__
        if isinstance(m, MultiHeadAttention):
            _check_module(name, m, cross=scope is not None)
            (found.attention if m.causal else found.cross).append((name, m))
        elif isinstance(m, LearnedPositionalEncoding | SinusoidalPositionalEncoding) or (
            isinstance(m, T5RelativePositionBias) and not m.bidirectional  # the decoder's
        ):
            found.positions.append((name, m))
        elif kind in UNSUPPORTED:
            raise CacheUnsupported(f"{name}: {UNSUPPORTED[kind]} has no cached decoding yet")
    if not found.attention:
        raise CacheUnsupported("the model has no causal self-attention to cache")
    biased = any(isinstance(m, T5RelativePositionBias) for _, m in found.positions)
    _check_calls(model, admit, biased)
    return found


def _check_module(name: str, m: MultiHeadAttention, cross: bool) -> None:
    if not m.causal and not cross:
        raise CacheUnsupported(
            f"{name}: attention that is not causal (an encoder or cross-attention) "
            "has no cached decoding yet"
        )
    if not m.causal and (m.qk_norm is not None or m.rotary is not None):
        raise CacheUnsupported(f"{name}: cross-attention with q/k norms or RoPE is not cached")
    rotary = m.rotary
    if rotary is not None and rotary._switch:
        raise CacheUnsupported(f"{name}: dynamic or longrope RoPE scaling is not cached")


class KVCache:
    """Keys and values of every causal self-attention module of one model, for ``batch_size``
    sequences of at most ``max_length`` tokens; made by ``model.new_cache(...)``.

    ``reset()`` empties it for a new batch (nothing is reallocated); ``length`` is the tokens
    written; ``nbytes`` its memory; ``layers`` maps each attention module's name to its
    :class:`LayerKV`. Bind it to its model while running it (``model.forward_cached`` does).
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int,
        max_length: int,
        *,
        dtype: torch.dtype | None = None,
        device: Any = None,
        static: bool = False,
        scope: Sequence[str] | None = None,
    ) -> None:
        if batch_size < 1 or max_length < 1:
            raise ValueError(
                f"batch_size and max_length must be >= 1, not {batch_size} and {max_length}"
            )
        found = cache_layers(model, scope)
        first = next(iter(model.parameters()), None)
        device = device if device is not None else (first.device if first is not None else "cpu")
        dtype = dtype or (first.dtype if first is not None else torch.float32)
        self.state = CacheState(batch_size, max_length, device, static)
        self.layers: dict[str, LayerKV] = {}
        for name, m in found.attention:
            shape = (batch_size, m._kv_heads, max_length)
            k = torch.zeros(*shape, m.head_dim, dtype=dtype, device=device)
            v = torch.zeros(*shape, m.v_head_dim, dtype=dtype, device=device)
            self.layers[name] = LayerKV(k, v, self.state)
            self.state.windows.add(m.window)
        # cross-attention: keys and values of the encoder's output, projected once per prompt
        self.cross: dict[str, CrossKV] = {name: CrossKV() for name, _ in found.cross}
        # an encoder-decoder's encoder outputs the decoder reads, kept for the prompt
        self.encoder_outputs: tuple[torch.Tensor, ...] | None = None
        self._attention = [m for _, m in found.attention]
        self._cross = [m for _, m in found.cross]
        self._positions = [m for _, m in found.positions]
        self._model_id = id(model)
        for m in self._attention:
            self._check_max_length(m.rotary, max_length)
        for m in self._positions:
            self._check_max_length(m, max_length)

    @staticmethod
    def _check_max_length(table: Any, max_length: int) -> None:
        limit = getattr(table, "max_len", None)  # T5's relative bias has no table length
        if limit is not None and max_length > limit:
            raise ValueError(
                f"max_length {max_length} exceeds the model's position table ({limit})"
            )

    @property
    def batch_size(self) -> int:
        return self.state.batch_size

    @property
    def max_length(self) -> int:
        return self.state.max_length

    @property
    def length(self) -> int:
        return self.state.length

    @property
    def static(self) -> bool:
        return self.state.static

    @property
    def nbytes(self) -> int:
        """Bytes of the keys and values (cross-attention's once a prompt made them)."""
        cross = sum(layer.nbytes for layer in self.cross.values())
        return cross + sum(layer.nbytes for layer in self.layers.values())

    def reset(self) -> None:
        """Empty the cache (keys and values stay allocated; stale slots are never read)."""
        self.state.reset()
        for cross in self.cross.values():
            cross.reset()
        self.encoder_outputs = None

    @contextmanager
    def bound(self, model: nn.Module) -> Iterator[KVCache]:
        """Within it, ``model``'s attention and position modules read and extend this cache."""
        if id(model) != self._model_id:
            raise ValueError("this cache was made for another model")
        for m, layer in zip(self._attention, self.layers.values(), strict=True):
            m.kv_cache = layer
        for m, cross in zip(self._cross, self.cross.values(), strict=True):
            m.kv_cache = cross
        for p in self._positions:
            p.cache_state = self.state
        try:
            yield self
        finally:
            for m in [*self._attention, *self._cross]:
                m.kv_cache = None
            for p in self._positions:
                p.cache_state = None

    def __repr__(self) -> str:
        return (
            f"KVCache(batch_size={self.batch_size}, max_length={self.max_length}, "
            f"layers={len(self.layers)}, length={self.length}, static={self.static})"
        )
