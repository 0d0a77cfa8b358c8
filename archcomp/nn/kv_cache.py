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

Two ways to read it: ``static=False`` (eager) attends to the ``length + T`` slots written so far;
``static=True`` (for ``torch.compile``) attends to all L slots under a mask, writes at tensor
positions, and keeps every tensor's shape fixed, so one compiled decode step serves every token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from archcomp.nn.attention import MultiHeadAttention
from archcomp.nn.cache_state import CacheState, LatentKV, LayerKV, WindowKV
from archcomp.nn.latent_attention import MultiHeadLatentAttention
from archcomp.nn.positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding
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
Entry = LayerKV | LatentKV | ConvState | ScanState


# sequence-mixing modules the cached path does not cover (their names, for the error)
UNSUPPORTED = {
    "ScaledDotProductAttention": "a bare scaled_dot_product_attention op",
    "T5RelativePositionBias": "a relative position bias",
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


def _check_calls(model: nn.Module) -> None:
    """Refuse what the generated forwards (an fx graph per class) do outside the cached path:
    attention called with other keys than its queries, or with masks or biases, and functions
    that mix positions."""
    seen: set[int] = set()
    for prefix, m in model.named_modules():
        graph = getattr(type(m), "graph", None) if not isinstance(m, fx.GraphModule) else m.graph
        if not isinstance(graph, fx.Graph) or id(graph) in seen:
            continue  # a block class's forward is checked once, at its first instance
        seen.add(id(graph))
        for node in graph.nodes:
            where = f"{prefix}.{node.name}" if prefix else node.name
            name = getattr(node.target, "__name__", str(node.target))
            if node.op == "call_function" and name in UNSUPPORTED_CALLS:
                raise CacheUnsupported(f"{where}: {UNSUPPORTED_CALLS[name]} has no cached decoding")
            if node.op != "call_module":
                continue
            target = m.get_submodule(str(node.target))
            masked = len(node.args) + len(node.kwargs) != 1
            if isinstance(target, MultiHeadLatentAttention) and masked:
                raise CacheUnsupported(f"{where}: latent attention with a mask is not cached")
            if not isinstance(target, MultiHeadAttention):
                continue
            q, *rest = list(node.args) + list(node.kwargs.values())
            if len(rest) != 2 or any(a is not q for a in rest):
                raise CacheUnsupported(
                    f"{where}: attention with other keys than its queries, or with masks or "
                    "score biases, has no cached decoding yet"
                )


@dataclass
class CacheLayers:
    """The modules of a model a cache serves, each as (qualified name, module)."""

    attention: list[tuple[str, Any]] = field(default_factory=list)  # causal self-attention
    latent: list[tuple[str, Any]] = field(default_factory=list)  # causal latent attention
    positions: list[tuple[str, Any]] = field(default_factory=list)  # learned or sinusoidal
    convs: list[tuple[str, Any]] = field(default_factory=list)  # causal convolutions (Mamba)
    scans: list[tuple[str, Any]] = field(default_factory=list)  # selective scans (Mamba)


def cache_layers(model: nn.Module) -> CacheLayers:
    """The modules of ``model`` the cache reads and extends; raises :class:`CacheUnsupported`
    naming the first layer the cached path does not cover."""
    found = CacheLayers()
    causal = causal_convs(model)
    for name, m in model.named_modules():
        kind = type(m).__name__
        if isinstance(m, MultiHeadAttention | MultiHeadLatentAttention):
            if not m.causal:
                raise CacheUnsupported(
                    f"{name}: attention that is not causal (an encoder or cross-attention) "
                    "has no cached decoding yet"
                )
            rotary = m.rotary
            if rotary is not None and rotary._switch:
                raise CacheUnsupported(f"{name}: dynamic or longrope RoPE scaling is not cached")
            kind_of = found.latent if isinstance(m, MultiHeadLatentAttention) else found.attention
            kind_of.append((name, m))
        elif isinstance(m, LearnedPositionalEncoding | SinusoidalPositionalEncoding):
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
    _check_calls(model)
    return found


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
    ) -> None:
        if batch_size < 1 or max_length < 1:
            raise ValueError(
                f"batch_size and max_length must be >= 1, not {batch_size} and {max_length}"
            )
        found = cache_layers(model)
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
        self._positions = [m for _, m in found.positions]
        self._model_id = id(model)
        for _, m in found.attention + found.latent:
            self._check_max_length(m.rotary, max_length)
        for m in self._positions:
            self._check_max_length(m, max_length)

    @staticmethod
    def _check_max_length(table: Any, max_length: int) -> None:
        if table is not None and max_length > table.max_len:
            raise ValueError(
                f"max_length {max_length} exceeds the model's position table ({table.max_len})"
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
        return sum(layer.nbytes for layer in self.layers.values())

    def reset(self) -> None:
        """Empty the cache (keys and values stay allocated; stale slots are never read;
        convolution windows and scan states are zeroed)."""
        self.state.reset()
        for entry in self.layers.values():
            if isinstance(entry, ConvState | ScanState):
                entry.reset()

    @contextmanager
    def bound(self, model: nn.Module) -> Iterator[KVCache]:
        """Within it, ``model``'s attention and position modules read and extend this cache."""
        if id(model) != self._model_id:
            raise ValueError("this cache was made for another model")
        with ExitStack() as stack:
            for name, entry in self.layers.items():
                stack.enter_context(_attached(self._modules[name], entry))
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
