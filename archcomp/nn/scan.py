"""Mamba's selective scan (S6; Gu and Dao, 2023): a linear recurrence over the sequence whose
step size and input/output maps depend on the input.

    dt  = softplus(delta + delta_bias)        (when delta_softplus)
    A   = -exp(A_log)                         (D, N): a decay exp(dt * A) is in (0, 1] for dt >= 0
    h_t = exp(dt_t A) * h_{t-1} + (dt_t * u_t) B_t        h_0 = 0, per channel d: (N,)
    y_t = C_t . h_t + D * u_t,   y_t * silu(z_t) when a gate z is given

Two ways to run the recurrence, equal up to rounding: the reference loop of the paper's
``selective_scan_ref`` (and of transformers' ``mamba_selective_scan``), one step per position,
and a chunked parallel scan: a Hillis-Steele scan inside chunks of ``chunk_size`` positions (all
chunks at once), the same scan over the chunks' end states, and one broadcast multiply-add
that carries each chunk's incoming state in. It multiplies decays and adds, never divides or
takes a log, so it is as safe as the loop; it runs log2(chunk) + log2(chunks) steps, not L.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archcomp.nn.scan_cache import ScanState

# auto: the loop up to this length, the chunked scan beyond where autograd records or off the
# CPU. Measured on CPU (256 channels, 16 states; benchmarks/bench_scan.py): with backward the
# loop wins at 16 positions and ties at 64, and at 256 the chunked scan takes a quarter of its
# time (and of transformers' loop); forward alone, the CPU loop is as fast or faster (the
# chunked scan streams its log2(chunk) levels through memory). On a GPU the loop is one launch
# per step and position.
SEQUENTIAL_UP_TO = 32


def sequential_scan(a: Tensor, b: Tensor) -> Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` along dim 2 from h = 0, one step per position."""
    if a.shape[2] == 0:
        return b  # no positions, no states
    h = torch.zeros_like(b[:, :, 0])  # (B, D, N)
    states = []
    for t in range(a.shape[2]):
        h = a[:, :, t] * h + b[:, :, t]  # (B, D, N)
        states.append(h)
    return torch.stack(states, dim=2)  # (B, D, L, N)


def _inclusive_scan(a: Tensor, b: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Hillis-Steele scan of the pairs (a, b) along ``dim``, composing
    (a1, b1) then (a2, b2) into (a2 * a1, a2 * b1 + b2): returns the products of the a's up
    to each position and the state there from h = 0."""
    n, k = a.shape[dim], 1
    while k < n:
        a_hi, a_lo = a.narrow(dim, k, n - k), a.narrow(dim, 0, n - k)
        b_hi, b_lo = b.narrow(dim, k, n - k), b.narrow(dim, 0, n - k)
        b = torch.cat([b.narrow(dim, 0, k), a_hi * b_lo + b_hi], dim=dim)
        a = torch.cat([a.narrow(dim, 0, k), a_hi * a_lo], dim=dim)
        k *= 2
    return a, b


def chunked_scan(a: Tensor, b: Tensor, chunk_size: int) -> Tensor:
    """:func:`sequential_scan`'s result by a parallel scan inside chunks and over chunks."""
    batch, d, length, n = a.shape
    chunk_size = max(1, min(chunk_size, length))  # no padding beyond the input
    chunks = -(-length // chunk_size)
    pad = chunks * chunk_size - length
    if pad:  # (1, 0) pairs leave the state as it is
        a = F.pad(a, (0, 0, 0, pad), value=1.0)
        b = F.pad(b, (0, 0, 0, pad))
    a = a.reshape(batch, d, chunks, chunk_size, n)  # (B, D, chunks, T, N)
    b = b.reshape(batch, d, chunks, chunk_size, n)
    a, b = _inclusive_scan(a, b, dim=3)  # each chunk from h = 0
    _, ends = _inclusive_scan(a[:, :, :, -1], b[:, :, :, -1], dim=2)  # (B, D, chunks, N)
    carry = F.pad(ends[:, :, :-1], (0, 0, 1, 0))  # the state entering each chunk
    h = b + a * carry[:, :, :, None]  # (B, D, chunks, T, N)
    return h.reshape(batch, d, chunks * chunk_size, n)[:, :, :length]  # (B, D, L, N)


class SelectiveScan(nn.Module):
    """Mamba's S6 scan over x [B, D, L] with delta [B, D, L], b and c (the paper's B and C)
    [B, N, L]; owns ``A_log`` (D, N) and ``D`` (D,), named as in Mamba's checkpoints, or, with
    ``holds_params=False``, takes them as the forward's ``A_log`` and ``D``.

    Computes in float32 at least (as the reference does) and returns x's dtype. ``algorithm``:
    ``sequential`` (the reference loop), ``chunked``, or ``auto`` (the chunked scan beyond
    ``SEQUENTIAL_UP_TO`` positions where autograd records, off the CPU or under
    ``torch.compile``, else the loop).
    """

    def __init__(
        self,
        num_features: int,
        d_state: int,
        delta_softplus: bool = False,
        algorithm: str = "auto",
        chunk_size: int = 32,
        recompute: bool = False,
        holds_params: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.recompute = recompute
        self.num_features = num_features
        self.d_state = d_state
        self.delta_softplus = delta_softplus
        self.algorithm = algorithm
        self.chunk_size = chunk_size
        self.holds_params = holds_params  # read back by --emit-python (A_log, D as inputs)
        self.scan_state: ScanState | None = None  # set while a KVCache is bound (kv_cache.py)
        self.A_log: nn.Parameter | None = None
        self.D: nn.Parameter | None = None
        if holds_params:
            self.A_log = nn.Parameter(
                torch.empty(num_features, d_state, device=device, dtype=dtype)
            )
            self.D = nn.Parameter(torch.empty(num_features, device=device, dtype=dtype))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """S4D-real: A = -(1, 2, ..., N) in every channel; D = 1 (Mamba's initialisation)."""
        if self.A_log is not None and self.D is not None and not self.A_log.is_meta:
            with torch.no_grad():
                n = torch.arange(1, self.d_state + 1, dtype=torch.float32)
                self.A_log.copy_(torch.log(n).expand(self.num_features, -1))
                self.D.fill_(1.0)

    def forward(
        self,
        x: Tensor,
        delta: Tensor,
        b: Tensor,
        c: Tensor,
        z: Tensor | None = None,
        delta_bias: Tensor | None = None,
        A_log: Tensor | None = None,  # noqa: N803 (Mamba's name)
        D: Tensor | None = None,  # noqa: N803
    ) -> Tensor:
        A_log = self.A_log if A_log is None else A_log
        D = self.D if D is None else D
        assert A_log is not None and D is not None, "A_log and D: held, or given"
        work = torch.promote_types(x.dtype, torch.float32)  # float32 at least
        u, dt = x.to(work), delta.to(work)  # (B, D, L)
        if delta_bias is not None:
            dt = dt + delta_bias.to(work)[:, None]  # (B, D, L) + (D, 1)
        if self.delta_softplus:
            dt = F.softplus(dt)
        A = -torch.exp(A_log.to(work))  # (D, N)
        if self.scan_state is not None:  # decoding: from the kept state, which moves on
            u = self.scan_state.mask(u)
            y, last = self._states_out(u, dt, A, b.to(work), c.to(work), self.scan_state.h)
            self.scan_state.h.copy_(last)
        elif self.recompute and torch.is_grad_enabled():
            y = self._recomputed(u, dt, A, b.to(work), c.to(work))  # (B, D, L)
        else:
            y = self._states_out(u, dt, A, b.to(work), c.to(work), None)[0]
        y = y + u * D.to(work)[:, None]
        if z is not None:
            y = y * F.silu(z.to(work))
        return y.to(x.dtype)

    def _states_out(
        self, u: Tensor, dt: Tensor, rate: Tensor, b: Tensor, c: Tensor, h0: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """u, dt (B, D, T), the rate A (D, N), b, c (B, N, T), the entering state h0
        (B, D, N) or None (zeros) -> (C . h (B, D, T), the last state (B, D, N))."""
        decay = torch.exp(dt[..., None] * rate[:, None])  # (B, D, T, N)
        drive = (dt * u)[..., None] * b.transpose(1, 2)[:, None]  # (B, D, T, N)
        if h0 is not None:  # h_0 = a_0 h0 + b_0: the scans start from zeros
            drive = torch.cat(
                [drive[:, :, :1] + decay[:, :, :1] * h0[:, :, None], drive[:, :, 1:]], 2
            )
        if self._chunked(decay):
            h = chunked_scan(decay, drive, self.chunk_size)  # (B, D, T, N)
        else:
            h = sequential_scan(decay, drive)
        # the last state copied: a view would keep the chunk's (B, D, T, N) states alive
        return torch.einsum("bdln,bnl->bdl", h, c), h[:, :, -1].clone()

    def _recomputed(self, u: Tensor, dt: Tensor, rate: Tensor, b: Tensor, c: Tensor) -> Tensor:
        """C . h chunk by chunk of ``chunk_size`` positions, each under activation
        checkpointing: autograd keeps the (B, D, L) inputs and each chunk's entering state
        (B, D, N), not the (B, D, L, N) states; backward recomputes one chunk's at a time."""
        from torch.utils.checkpoint import checkpoint

        ys, h = [], None
        for start in range(0, u.shape[2], self.chunk_size):
            part = slice(start, start + self.chunk_size)
            y, h = checkpoint(
                self._states_out, u[..., part], dt[..., part], rate, b[..., part], c[..., part], h,
                use_reentrant=False,
            )  # fmt: skip
            ys.append(y)
        return torch.cat(ys, dim=2) if ys else u * 0  # (B, D, L)

    def _chunked(self, decay: Tensor) -> bool:
        if self.algorithm != "auto":
            return self.algorithm == "chunked"
        if torch.jit.is_tracing():  # sizes are tensors there: the trace keeps the loop
            return False
        backward = torch.is_grad_enabled() and decay.requires_grad
        # compiled: the loop would unroll to a graph node per position
        log_depth = backward or decay.device.type != "cpu" or torch.compiler.is_compiling()
        return decay.shape[2] > SEQUENTIAL_UP_TO and log_depth

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, d_state={self.d_state}, delta_softplus={self.delta_softplus}, "
            f"algorithm={self.algorithm!r}, chunk_size={self.chunk_size}, "
            f"recompute={self.recompute}"
        )
