"""What a KV cache's layers share while it runs (:class:`CacheState`) and one attention module's
keys and values (:class:`LayerKV`); :mod:`archcomp.nn.kv_cache` makes and binds them."""

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
        # set by begin() for the forward in progress
        self.positions: Tensor = self.slots[:0]  # (T,) or (B, T): position of each new token
        self.write: Tensor = self.slots[:0]  # (T,): the slots the new tokens go to
        self.masks: dict[int, tuple[Tensor | None, bool]] = {}  # window -> (attn_mask, causal)

    def reset(self) -> None:
        self.length = 0
        self.padded = False
        self.valid.fill_(True)
        self.pads.zero_()

    def begin(self, steps: int, attention_mask: Tensor | None = None) -> None:
        """Prepare positions, slots and masks for ``steps`` new tokens per row;
        ``attention_mask`` (B, steps), 1 = a real token, 0 = left padding."""
        start, end = self.length, self.length + steps
        if end > self.max_length:
            raise ValueError(
                f"the cache holds {self.max_length} tokens; {start} written + {steps} new "
                f"is {end} (make it with a larger max_length)"
            )
        if attention_mask is not None:
            real = attention_mask.to(self.valid.device, torch.bool)  # (B, T)
            self.valid[:, start:end] = real
            if not bool(real.all()):
                if start:
                    raise ValueError("only the first forward of a cache may have padding (left)")
                self.padded = True
                self.pads.copy_((~real).sum(-1, keepdim=True))  # left pads of each row
        self.write = self.slots[start:end]  # (T,)
        if self.static:  # a tensor of its own: what compiled code reads has one layout
            self.write = self.write.clone()
        positions = self.write if not self.padded else (self.write - self.pads).clamp(min=0)
        self.positions = positions  # (T,) or (B, T)
        self.masks = {w: self._mask(start, end, w) for w in self.windows}

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

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


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
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.k, self.v) if t is not None)
