"""A static key/value cache for decoding with causal self-attention, as gpt-fast keeps one.

:class:`KVCache` holds, for every causal self-attention module of a model, keys (B, h_kv, L, d_k)
and values (B, h_kv, L, d_v) allocated once for a batch of B sequences of at most L tokens
(grouped-query and multi-query attention store their ``num_kv_heads`` heads only), and one
:class:`CacheState` the layers share: how many tokens the cache holds, their positions and which
slots are left padding. While a cache is bound to a model (:meth:`KVCache.bound`), attention
modules read and extend it and position modules (rotary, learned, sinusoidal) add the positions
of the new tokens instead of 0..T-1; every decoder spec gets the cached path from its ops alone.
Mamba layers keep their causal convolution's last inputs and their scan's state instead
(:mod:`archcomp.nn.scan_cache`): O(1) memory and work per token.
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from archcomp.nn.attention import MultiHeadAttention
from archcomp.nn.cache_state import CacheState, CrossKV, LatentKV, LayerKV, WindowKV
from archcomp.nn.latent_attention import MultiHeadLatentAttention
from archcomp.nn.positional import (
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    T5RelativePositionBias,
)
from archcomp.nn.scan import SelectiveScan
from archcomp.nn.scan_cache import ConvState, ScanState, causal_convs

__all__ = [
    "CacheLayers",
    "CacheState",
    "CacheUnsupported",
    "ConvState",
    "KVCache",
    "LatentKV",
    "LayerKV",
    "ScanState",
    "WindowKV",
    "cache_layers",
]

# what a cache keeps for one module
Entry = LayerKV | LatentKV | ConvState | ScanState | CrossKV


# sequence-mixing modules the cached path does not cover (their names, for the error)
UNSUPPORTED = {
    "ScaledDotProductAttention": "a bare scaled_dot_product_attention op",
    "T5RelativePositionBias": "a bidirectional relative position bias",
    "Conv1d": "a convolution along the sequence other than a causal one (Mamba's)",
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


_MASKS = ("key_padding_mask", "mask")


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


def _check_calls(model: nn.Module, scope: Callable[[str], bool], biased: bool) -> None:
    """Refuse what the generated forwards (an fx graph per class) do outside the cached path:
    attention called with other keys than its queries, or with masks or biases (a score bias
    is allowed when ``biased``: the model's bias modules take the cache's positions), and
    functions that mix positions. Only modules ``scope`` admits are read."""
    seen: set[int] = set()
    for prefix, m in model.named_modules():
        graph = getattr(type(m), "graph", None) if not isinstance(m, fx.GraphModule) else m.graph
        in_scope = scope(prefix) or m is model
        if not isinstance(graph, fx.Graph) or id(graph) in seen or not in_scope:
            continue  # a block class's forward is checked once, at its first instance in scope
        seen.add(id(graph))
        for node in graph.nodes:
            where = f"{prefix}.{node.name}" if prefix else node.name
            name = getattr(node.target, "__name__", str(node.target))
            if node.op == "call_function" and name in UNSUPPORTED_CALLS:
                raise CacheUnsupported(f"{where}: {UNSUPPORTED_CALLS[name]} has no cached decoding")
            full = f"{prefix}.{node.target}" if prefix else str(node.target)
            if node.op != "call_module" or not scope(full):
                continue
            target = m.get_submodule(str(node.target))
            masked = len(node.args) + len(node.kwargs) != 1
            if isinstance(target, MultiHeadLatentAttention) and masked:
                raise CacheUnsupported(f"{where}: latent attention with a mask is not cached")
            if isinstance(target, MultiHeadAttention):
                args = _attention_args(target, node)
                if args.get("score_bias") is not None and target.causal and biased:
                    args = {**args, "score_bias": None}
                _check_attention(where, target, args)


def in_scope(scope: Sequence[str] | None) -> Callable[[str], bool]:
    """Whether a qualified module name is under one of ``scope``'s (every name when None)."""
    if scope is None:
        return lambda name: True
    return lambda name: any(name == s or name.startswith(f"{s}.") for s in scope)


@dataclass
class CacheLayers:
    """The modules of a model a cache serves, each as (qualified name, module)."""

    attention: list[tuple[str, Any]] = field(default_factory=list)  # causal self-attention
    cross: list[tuple[str, Any]] = field(default_factory=list)  # an encoder-decoder's
    latent: list[tuple[str, Any]] = field(default_factory=list)  # causal latent attention
    positions: list[tuple[str, Any]] = field(default_factory=list)  # learned or sinusoidal
    convs: list[tuple[str, Any]] = field(default_factory=list)  # causal convolutions (Mamba)
    scans: list[tuple[str, Any]] = field(default_factory=list)  # selective scans (Mamba)


def cache_layers(model: nn.Module, scope: Sequence[str] | None = None) -> CacheLayers:
    """The modules of ``model`` the cache reads and extends (those under ``scope``'s names, an
    encoder-decoder's decoder part; all when None); raises :class:`CacheUnsupported` naming
    the first layer the cached path does not cover. Outside a scope (a decoder alone), an
    attention that is not causal is refused; inside one it is cross-attention."""
    found = CacheLayers()
    causal = causal_convs(model)
    admit = in_scope(scope)
    for name, m in model.named_modules():
        if not admit(name):
            continue
        kind = type(m).__name__
        if isinstance(m, MultiHeadAttention | MultiHeadLatentAttention):
            _check_module(name, m, cross=scope is not None and isinstance(m, MultiHeadAttention))
            if isinstance(m, MultiHeadLatentAttention):
                found.latent.append((name, m))
            else:
                (found.attention if m.causal else found.cross).append((name, m))
        elif isinstance(m, LearnedPositionalEncoding | SinusoidalPositionalEncoding) or (
            isinstance(m, T5RelativePositionBias) and not m.bidirectional  # the decoder's
        ):
            found.positions.append((name, m))
        elif isinstance(m, SelectiveScan):
            found.scans.append((name, m))
        elif isinstance(m, nn.Conv1d) and name in causal:
            found.convs.append((name, m))
        elif kind in UNSUPPORTED:
            raise CacheUnsupported(f"{name}: {UNSUPPORTED[kind]} has no cached decoding yet")
    if not (found.attention or found.latent or found.scans):
        raise CacheUnsupported(
            "the model has no causal self-attention (nor a state-space layer) to cache"
        )
    biased = any(isinstance(m, T5RelativePositionBias) for _, m in found.positions)
    _check_calls(model, admit, biased)
    return found


def _check_module(name: str, m: Any, cross: bool) -> None:
    if not m.causal and not cross:
        raise CacheUnsupported(
            f"{name}: attention that is not causal (an encoder or cross-attention) "
            "has no cached decoding yet"
        )
    if not m.causal and (m.qk_norm is not None or m.rotary is not None):
        raise CacheUnsupported(f"{name}: cross-attention with q/k norms or RoPE is not cached")
    rotary = m.rotary
    if rotary is not None and rotary._switch and not rotary._long:
        raise CacheUnsupported(f"{name}: dynamic RoPE scaling is not cached")


@contextmanager
def _attached(module: nn.Module, entry: Entry) -> Iterator[None]:
    """Within it, ``module`` reads and extends ``entry``: attention its ``kv_cache``, a scan
    its ``scan_state``, a causal convolution through a forward hook."""
    if isinstance(entry, ConvState):
        handle = module.register_forward_hook(entry.hook)
        try:
            yield
        finally:
            handle.remove()
        return
    attr = "scan_state" if isinstance(entry, ScanState) else "kv_cache"
    setattr(module, attr, entry)
    try:
        yield
    finally:
        setattr(module, attr, None)


class KVCache:
    """Keys and values of every causal self-attention module of one model, and the states of
    its Mamba layers, for ``batch_size`` sequences of at most ``max_length`` tokens; made by
    ``model.new_cache(...)``.

    ``reset()`` empties it for a new batch (nothing is reallocated); ``length`` is the tokens
    written; ``nbytes`` its memory; ``layers`` maps each cached module's name to its entry: a
    :class:`LayerKV` (attention), :class:`ConvState` (a causal convolution's last inputs) or
    :class:`ScanState` (a selective scan's state). Bind it to its model while running it
    (``model.forward_cached`` does).
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
        self.layers: dict[str, Entry] = {}
        order = {name: i for i, (name, _) in enumerate(model.named_modules())}
        for name, m in found.attention:
            ring = 0 < m.window < max_length  # a ring buffer of the window is smaller
            shape = (batch_size, m._kv_heads, m.window if ring else max_length)
            k = torch.zeros(*shape, m.head_dim, dtype=dtype, device=device)
            v = torch.zeros(*shape, m.v_head_dim, dtype=dtype, device=device)
            if ring:
                self.layers[name] = WindowKV(k, v, self.state, m.window)
                self.state.rings.add(m.window)
            else:
                self.layers[name] = LayerKV(k, v, self.state)
                self.state.windows.add(m.window)
        for name, m in found.latent:
            latent = torch.zeros(batch_size, max_length, m.kv_lora_rank, dtype=dtype, device=device)
            rope_key = torch.zeros(
                batch_size, max_length, m.qk_rope_head_dim, dtype=dtype, device=device
            )
            self.layers[name] = LatentKV(latent, rope_key, self.state)
            self.state.windows.add(0)
        for name, m in found.convs:
            self.layers[name] = ConvState(m, self.state, dtype, device)
        for name, m in found.scans:
            self.layers[name] = ScanState(m, self.state, dtype, device)
        self.layers = dict(sorted(self.layers.items(), key=lambda e: order[e[0]]))  # model order
        stateful = found.attention + found.latent + found.convs + found.scans
        self._modules = {name: m for name, m in stateful}
        # cross-attention: keys and values of the encoder's output, projected once per prompt
        self.cross: dict[str, CrossKV] = {name: CrossKV() for name, _ in found.cross}
        self._cross = [m for _, m in found.cross]
        # an encoder-decoder's encoder outputs the decoder reads, kept for the prompt
        self.encoder_outputs: tuple[torch.Tensor, ...] | None = None
        self._positions = [m for _, m in found.positions]
        self._model_id = id(model)
        for _, m in found.attention + found.latent:
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
        """Bytes of the keys, values and states (cross-attention's once a prompt made them)."""
        cross = sum(layer.nbytes for layer in self.cross.values())
        return cross + sum(layer.nbytes for layer in self.layers.values())

    def reset(self) -> None:
        """Empty the cache (keys and values stay allocated; stale slots are never read;
        convolution windows and scan states are zeroed)."""
        self.state.reset()
        for entry in self.layers.values():
            if isinstance(entry, ConvState | ScanState):
                entry.reset()
        for cross in self.cross.values():
            cross.reset()
        self.encoder_outputs = None

    @contextmanager
    def bound(self, model: nn.Module) -> Iterator[KVCache]:
        """Within it, ``model``'s attention and position modules read and extend this cache."""
        if id(model) != self._model_id:
            raise ValueError("this cache was made for another model")
        with ExitStack() as stack:
            for name, entry in self.layers.items():
                stack.enter_context(_attached(self._modules[name], entry))
            for m, cross in zip(self._cross, self.cross.values(), strict=True):
                stack.enter_context(_attached(m, cross))
            for p in self._positions:
                p.cache_state = self.state
            try:
                yield self
            finally:
                for p in self._positions:
                    p.cache_state = None

    def __repr__(self) -> str:
        return (
            f"KVCache(batch_size={self.batch_size}, max_length={self.max_length}, "
            f"layers={len(self.layers)}, length={self.length}, static={self.static})"
        )
