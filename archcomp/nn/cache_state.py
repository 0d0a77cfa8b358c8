"""What a KV cache's layers share while it runs (:class:`CacheState`), one attention module's
keys and values (:class:`LayerKV`) and one latent attention module's compressed latent
(:class:`LatentKV`); :mod:`archcomp.nn.kv_cache` makes and binds them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class CacheState:
    """What every layer of one cache shares: the tokens written (``length``), and, for the tokens
    of the forward in progress, their positions, the slots they are written to and the masks.

    ``valid`` (B, L) bool is False at a left-padding slot; ``pads`` (B, 1) counts each row's
    left padding, so a row's first real token is at position 0 (as transformers' position ids
    from an attention mask).
    """

    def __init__(self, batch_size: int, max_length: int, device: Any, static: bool) -> None:
        self.batch_size = batch_size
        self.max_length = max_length
        self.static = static
        self.length = 0  # tokens written so far, for every row
        self.padded = False  # some row has left padding (masks cannot be skipped)
        self.valid = torch.ones(batch_size, max_length, dtype=torch.bool, device=device)
        self.pads = torch.zeros(batch_size, 1, dtype=torch.int64, device=device)  # (B, 1)
        self.slots = torch.arange(max_length, device=device)  # (L,)
        self.windows: set[int] = set()  # the sliding windows of the layers (0: none)
        self.rings: set[int] = set()  # the windows of the layers that keep only their window
        # set by begin() for the forward in progress
        self.first = True  # nothing cached before it (a constant of every later step)
        self.positions: Tensor = self.slots[:0]  # (T,) or (B, T): position of each new token
        self.span: slice | None = None  # the positions as a slice, when consecutive (eager)
        self.write: Tensor = self.slots[:0]  # (T,): the slots the new tokens go to
        self.masks: dict[int, tuple[Tensor | None, bool]] = {}  # window -> (attn_mask, causal)
        self.ring_masks: dict[int, Tensor] = {}  # window -> attn_mask of a ring layer

    def reset(self) -> None:
        self.length = 0
        self.padded = False
        self.valid.fill_(True)
        self.pads.zero_()

    def begin(self, steps: int, attention_mask: Tensor | None = None) -> None:
        """Prepare positions, slots and masks for ``steps`` new tokens per row;
        ``attention_mask`` (B, steps), 1 = a real token, 0 = left padding."""
        self.check_room(steps)
        start, end = self.length, self.length + steps
        if attention_mask is not None:
            real = attention_mask.to(self.valid.device, torch.bool)  # (B, T)
            self.valid[:, start:end] = real
            if not bool(real.all()):
                if start:
                    raise ValueError("only the first forward of a cache may have padding (left)")
                self.padded = True
                self.pads.copy_((~real).sum(-1, keepdim=True))  # left pads of each row
        self.first = start == 0  # nothing cached before these tokens
        self.write = self.slots[start:end]  # (T,)
        if self.static:  # a tensor of its own: what compiled code reads has one layout
            self.write = self.write.clone()
        positions = self.write if not self.padded else (self.write - self.pads).clamp(min=0)
        self.positions = positions  # (T,) or (B, T)
        self.span = None if self.static or self.padded else slice(start, end)
        self.masks = {w: self._mask(start, end, w) for w in self.windows}
        self.ring_masks = {w: self._ring_mask(start, end, w) for w in self.rings}

    def check_room(self, steps: int) -> None:
        """Raise when ``steps`` more tokens do not fit."""
        if self.length + steps > self.max_length:
            raise ValueError(
                f"the cache holds {self.max_length} tokens; {self.length} written + {steps} new "
                f"is {self.length + steps} (make it with a larger max_length)"
            )

    def begin_step(self, position: Tensor) -> None:
        """:meth:`begin` of one token at ``position`` (1,) int64 in a static cache, from tensors
        alone: what a compiled one-token step calls inside its graph, so that nothing in it
        changes from one token to the next but tensor values (the caller advances)."""
        self.first = False
        self.write = position  # (1,)
        self.positions = position if not self.padded else (position - self.pads).clamp(min=0)
        self.span = None
        self.masks = {w: self._mask(1, 2, w) for w in self.windows}  # static: slots decide
        self.ring_masks = {w: self._ring_step_mask(position, w) for w in self.rings}

    def _mask(self, start: int, end: int, window: int) -> tuple[Tensor | None, bool]:
        """(attn_mask, is_causal) of queries start..end-1 over the keys the layer reads."""
        keys = self.max_length if self.static else end
        if not (self.static or self.padded or window):
            if end - start == 1:
                return None, False  # one new token sees every key written: no mask
            if start == 0:
                return None, True  # a first forward: plain causal attention
        i = self.write[:, None]  # (T, 1): absolute slot of each query
        j = self.slots[None, :keys]  # (1, S)
        keep = j <= i  # (T, S)
        if window:
            # a row's positions are its slots less its padding: the same differences
            keep = keep & (j > i - window)
        keep = keep[None] & self.valid[:, None, :keys]  # (B, T, S)
        keep = keep | (j == i)  # a padding query sees itself: no row without a key (no NaN)
        return keep[:, None], False  # (B, 1, T, S)

    def _ring_mask(self, start: int, end: int, window: int) -> Tensor:
        """(B, 1, T, window + T) bool: the new queries over a ring layer's keys, its ``window``
        slots as they were before this forward (slot r holds the last position p < start
        with p % window == r, none when p < 0) and then the T new tokens; for one new token
        (B, 1, 1, window), over the slots once it is written (:meth:`WindowKV.update`)."""
        r = self.slots[:window]  # (w,)
        if end - start == 1:  # slot r holds the last position p <= start with p % w == r
            j = (start - (start - r) % window)[None, :]  # (1, w): < 0 for a slot never written
        else:
            held = (start - 1) - (start - 1 - r) % window  # (w,)
            j = torch.cat([held, self.write])[None, :]  # (1, w + T): position of each key
        i = self.write[:, None]  # (T, 1)
        keep = (j >= 0) & (j <= i) & (j > i - window)  # (T, w + T)
        keep = keep[None] & self.valid[:, j[0].clamp(min=0)][:, None, :]  # (B, T, w + T)
        keep = keep | (j == i)  # a padding query sees itself: no row without a key (no NaN)
        return keep[:, None]  # (B, 1, T, w + T)

    def _ring_step_mask(self, position: Tensor, window: int) -> Tensor:
        """:meth:`_ring_mask` of one token at tensor ``position`` (1,): (B, 1, 1, window)."""
        r = self.slots[:window]  # (w,)
        j = (position - (position - r) % window)[None, :]  # (1, w): < 0 for a slot never written
        i = position[:, None]  # (1, 1)
        keep = (j >= 0) & (j <= i) & (j > i - window)  # (1, w)
        keep = keep[None] & self.valid[:, j[0].clamp(min=0)][:, None, :]  # (B, 1, w)
        keep = keep | (j == i)
        return keep[:, None]  # (B, 1, 1, w)

    def advance(self, steps: int) -> None:
        self.length += steps


class LayerKV:
    """One attention module's keys (B, h_kv, L, d_k) and values (B, h_kv, L, d_v)."""

    def __init__(self, k: Tensor, v: Tensor, state: CacheState) -> None:
        self.k = k
        self.v = v
        self.state = state

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new keys and values (B, h_kv, T, d) at the state's slots; return the keys
        and values the queries read: the slots written so far, or all of them when static."""
        st = self.state
        if st.static:
            self.k.index_copy_(2, st.write, k)
            self.v.index_copy_(2, st.write, v)
            return self.k, self.v  # (B, h_kv, L, d)
        start, end = st.length, st.length + k.size(2)
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, h_kv, end, d)

    def mask(self, window: int) -> tuple[Tensor | None, bool]:
        """(attn_mask, is_causal) of the new queries over the keys :meth:`update` returns."""
        return self.state.masks[window]

    @property
    def tensors(self) -> dict[str, Tensor]:
        return {"k": self.k, "v": self.v}

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


class WindowKV(LayerKV):
    """A sliding-window attention module's keys (B, h_kv, window, d_k) and values
    (B, h_kv, window, d_v): a ring buffer of the last ``window`` tokens (position p at slot
    p % window), all a query of a window layer reads from before it."""

    def __init__(self, k: Tensor, v: Tensor, state: CacheState, window: int) -> None:
        super().__init__(k, v, state)
        self.window = window

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """The ring as it was, then the new keys and values (B, h_kv, window + T, d), what the
        queries read; the last ``window`` new ones then overwrite their slots. One new token is
        written first and the ring alone (B, h_kv, window, d) read: no copy per step."""
        st, steps = self.state, k.size(2)
        if steps == 1:  # the position it overwrites is outside its window: write, then read
            slot = st.write % self.window  # (1,)
            self.k.index_copy_(2, slot, k)
            self.v.index_copy_(2, slot, v)
            return self.k, self.v  # (B, h_kv, window, d)
        keys, values = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        keep = min(steps, self.window)  # a new token older than the window is never read again
        slots = st.write[steps - keep :] % self.window  # (keep,): distinct
        self.k.index_copy_(2, slots, k[:, :, steps - keep :])
        self.v.index_copy_(2, slots, v[:, :, steps - keep :])
        return keys, values

    def mask(self, window: int) -> tuple[Tensor | None, bool]:
        return self.state.ring_masks[window], False


class LatentKV:
    """One latent attention module's compressed cache (DeepSeek's MLA): the normalized latent
    c^KV (B, L, kv_lora_rank) and the rotated shared key k^R (B, L, qk_rope_head_dim) of each
    token, from which every head's keys and values follow."""

    def __init__(self, latent: Tensor, rope_key: Tensor, state: CacheState) -> None:
        self.latent = latent
        self.rope_key = rope_key
        self.state = state

    def update(self, latent: Tensor, rope_key: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new tokens' latent (B, T, r) and rotated key (B, T, d_rope) at the state's
        slots; return those the queries read: the slots written so far, or all when static."""
        st = self.state
        if st.static:
            self.latent.index_copy_(1, st.write, latent)
            self.rope_key.index_copy_(1, st.write, rope_key)
            return self.latent, self.rope_key  # (B, L, r), (B, L, d_rope)
        start, end = st.length, st.length + latent.size(1)
        self.latent[:, start:end] = latent
        self.rope_key[:, start:end] = rope_key
        return self.latent[:, :end], self.rope_key[:, :end]  # (B, end, r), (B, end, d_rope)

    @property
    def tensors(self) -> dict[str, Tensor]:
        return {"latent": self.latent, "rope_key": self.rope_key}

    @property
    def nbytes(self) -> int:
        return self.latent.nbytes + self.rope_key.nbytes


def _hides_none(mask: Tensor) -> bool:
    """A bool mask that keeps every key (a mask on meta, with no values, is kept)."""
    return not mask.is_meta and bool(mask.all())


class CrossKV:
    """One cross-attention module's keys (B, h_kv, S, d_k) and values (B, h_kv, S, d_v) of the
    encoder's output, and its mask over them (None: every key visible): made once per prompt
    (the first forward after a reset), then read by every later step."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.mask: Tensor | None = None  # broadcasting to (B, h, T, S); None: no padding
        self.filled = False  # False after a reset: the next forward projects the memory

    def read(
        self, project: Callable[[], tuple[Tensor, Tensor, Tensor | None]]
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The stored keys, values and mask; on the first forward of a prompt, ``project()``'s,
        stored in place when the shapes allow (a compiled step keeps reading the same
        tensors). A mask that hides no key is dropped (the fused kernels' fast path)."""
        if not self.filled:
            k, v, mask = project()
            if mask is not None and mask.dtype == torch.bool and _hides_none(mask):
                mask = None
            old_k, old_v = self.k, self.v
            fits = old_k is not None and old_v is not None
            if fits and old_k.shape == k.shape and old_v.shape == v.shape:  # type: ignore[union-attr]
                k, v = old_k.copy_(k), old_v.copy_(v)  # type: ignore[union-attr]
            self.k, self.v = (k, v) if k is old_k else (k.clone(), v.clone())
            self.mask = mask
            self.filled = True
        assert self.k is not None and self.v is not None
        return self.k, self.v, self.mask

    def reset(self) -> None:
        self.filled = False

    @property
    def tensors(self) -> dict[str, Tensor]:
        """Its keys and values by name, once a prompt made them."""
        return {} if self.k is None or self.v is None else {"k": self.k, "v": self.v}

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.k, self.v) if t is not None)
