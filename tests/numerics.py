"""Tolerances for comparing two computations of the same function in floating point.

The rule (see tests/NUMERICS.md for the derivation and the measurements behind ``C``)::

    rms(actual - expected) <= tol * max(rms(expected), floor)
    tol = C * eps(dtype) * sqrt(K)                          (float32, float64)
    tol = C * sqrt(eps(float32)^2 * K + eps(dtype)^2 * N)   (float16, bfloat16)

``K`` is the longest chain of roundings behind the compared tensors: along the way from the
inputs, every reduction of length k (a matmul's inner dimension, a norm's normalized size, a
softmax's length, the positions a weight gradient sums over) adds k and every other arithmetic
op adds 1. :class:`RoundingChains` counts it from the aten ops a computation runs, so a test
never picks it by hand. ``floor`` is the scale of the terms when the compared value is a sum
that cancels (a gradient that is zero in exact arithmetic has rounding noise of the size of
the other gradients); by default it is the tensor's own scale. ``N`` counts the ops that round
along the chain: half-precision kernels accumulate in float32 and round each output once.
Same kernels on the same inputs: :func:`assert_same` (bitwise).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakTensorKeyDictionary

C = 4.0
"""Allowed multiple of the random-walk error eps * sqrt(K) (NUMERICS.md: measured <= 0.55)."""


class _Aten:
    """``torch.ops.aten``; an op the installed torch lacks is a sentinel that matches no op."""

    _missing = object()

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.ops.aten, name, self._missing)


aten: Any = _Aten()

# Ops that round nothing: views, copies, selections, layout, constants.
_EXACT = {
    aten.view,
    aten._unsafe_view,
    aten.reshape,
    aten.t,
    aten.transpose,
    aten.permute,
    aten.expand,
    aten.squeeze,
    aten.unsqueeze,
    aten.detach,
    aten.alias,
    aten.clone,
    aten.copy_,
    aten.contiguous,
    aten.cat,
    aten.stack,
    aten.split,
    aten.split_with_sizes,
    aten.chunk,
    aten.unbind,
    aten.select,
    aten.select_backward,
    aten.slice,
    aten.slice_backward,
    aten.index,
    aten.index_select,
    aten.gather,
    aten.embedding,
    aten.where,
    aten.masked_fill,
    aten.masked_fill_,
    aten.relu,
    aten.threshold_backward,
    aten.max_pool2d_with_indices,
    aten.max_pool2d_with_indices_backward,
    aten.amax,
    aten.amin,
    aten.max,
    aten.min,
    aten.neg,
    aten.abs,
    aten.zeros,
    aten.zeros_like,
    aten.ones,
    aten.ones_like,
    aten.full,
    aten.full_like,
    aten.empty,
    aten.empty_like,
    aten.scalar_tensor,
    aten.arange,
    aten.triu,
    aten.tril,
    aten.bitwise_not,
    aten.logical_not,
    aten.eq,
    aten.ne,
    aten.lt,
    aten.le,
    aten.gt,
    aten.ge,
    aten.lift_fresh,
}


def _numel(shape: Iterable[int]) -> int:
    return math.prod(int(s) for s in shape)


def _attention(q: torch.Tensor, k: torch.Tensor) -> int:
    # q (..., L, E), k (..., S, E): scores sum E, softmax and weights @ V sum S each, and the
    # backward sums L (grad of K and V) and S again (softmax backward).
    return q.size(-1) + 3 * k.size(-2) + q.size(-2)


def _rnn(x: torch.Tensor, hidden: int, batch_first: bool) -> int:
    # one layer over T steps: each step sums input and hidden features; weight gradients sum
    # the T * B positions.
    steps = x.size(1) if batch_first else x.size(0)
    return steps * (x.size(-1) + hidden + 8) + x.numel() // x.size(-1)


def _reduction(func: Any, args: tuple[Any, ...], out: Any) -> int:
    """The length of the reduction an aten op performs (1: an elementwise op; 0: exact)."""
    op = func.overloadpacket
    a = args
    if op in _EXACT:
        return 0
    if op in (aten.mm, aten.bmm, aten.mv, aten.dot, aten.matmul):
        return int(a[0].size(-1))
    if op in (aten.addmm, aten.baddbmm, aten.addmv, aten.addbmm):
        return int(a[1].size(-1)) + 1
    if op is aten.convolution:
        weight, transposed, groups = a[1], a[6], a[8]
        per_out = weight.size(0) // groups if transposed else weight.size(1)
        return per_out * _numel(weight.shape[2:]) + 1
    if op is aten.convolution_backward:
        grad, weight, transposed, groups = a[0], a[2], a[7], a[9]
        per_in = weight.size(1) if transposed else weight.size(0) // groups
        return max(per_in * _numel(weight.shape[2:]), grad.numel() // grad.size(1))
    if op in (aten.native_layer_norm, aten.native_layer_norm_backward):
        x, shape = (a[0], a[1]) if op is aten.native_layer_norm else (a[1], a[2])
        n = _numel(shape)
        return max(n, x.numel() // n) + 4
    if op in (
        aten.native_batch_norm,
        aten._native_batch_norm_legit,
        aten._native_batch_norm_legit_no_training,
        aten.native_batch_norm_backward,
    ):
        x = a[1] if op is aten.native_batch_norm_backward else a[0]
        return x.numel() // x.size(1) + 4
    if op in (aten._softmax, aten._log_softmax):
        return int(a[0].size(a[1])) + 2
    if op in (aten._softmax_backward_data, aten._log_softmax_backward_data):
        return int(a[0].size(a[2])) + 2
    if op in (
        aten._scaled_dot_product_flash_attention_for_cpu,
        aten._scaled_dot_product_flash_attention,
        aten._scaled_dot_product_efficient_attention,
        aten._scaled_dot_product_cudnn_attention,
    ):
        return _attention(a[0], a[1])
    if op in (
        aten._scaled_dot_product_flash_attention_for_cpu_backward,
        aten._scaled_dot_product_flash_attention_backward,
        aten._scaled_dot_product_efficient_attention_backward,
        aten._scaled_dot_product_cudnn_attention_backward,
    ):
        return _attention(a[1], a[2])
    if op is aten._native_multi_head_attention:  # nn.MultiheadAttention's inference fast path
        q, k, e, h = a[0], a[1], int(a[3]), int(a[4])
        return 2 * (e + 1) + e // h + 3 * k.size(-2) + q.size(-2)
    if op is aten._transformer_encoder_layer_fwd:  # nn.TransformerEncoderLayer's fast path
        x, e, h, d_ff = a[0], int(a[1]), int(a[2]), int(a[14].size(0))
        # qkv, attention, projection, norm, linear1, linear2, norm
        return 5 * e + d_ff + e // h + 4 * x.size(-2) + 12
    if op is aten.mkldnn_rnn_layer:
        return _rnn(a[0], int(a[10]), bool(a[14]))
    if op is aten.mkldnn_rnn_layer_backward:
        return _rnn(a[0], int(a[15]), bool(a[21]))
    if op is aten.embedding_dense_backward:
        return int(a[1].numel())  # a row sums the gradients of every position with its id
    if op in (aten.cumsum, aten.cumprod):
        return int(a[0].size(a[1]))
    # Any other op that returns fewer elements than it reads (sum, mean, var, norm, ...) is
    # taken to reduce the difference; everything else rounds once per element.
    read = max((t.numel() for t in tree_leaves(args) if isinstance(t, torch.Tensor)), default=1)
    written = max((t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)), default=1)
    return max(1, read // max(written, 1))


class RoundingChains(TorchDispatchMode):
    """Counts, for every tensor computed inside it, the longest chain of roundings behind it.

    ``with RoundingChains() as chains: loss(model(x)).backward()``; then ``chains.of(t)`` is K
    for a tensor made inside (0 for one made outside), ``chains.longest`` the largest K of all
    (the one for gradients, whose chain runs forward and back), and ``chains.tolerance(dtype,
    *tensors)`` the rule's tolerance for them (all tensors: the longest chain). Alongside K it
    counts N, the ops that round their output, which is what float16/bfloat16 pay for (their
    reductions accumulate in float32). Results are those of a run without it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._chain: WeakTensorKeyDictionary = WeakTensorKeyDictionary()  # tensor -> (K, N)
        self.longest = 0
        self.longest_ops = 0

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        seen = [
            self._chain.get(t, (0, 0))
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        ]
        length = _reduction(func, args, out)
        k = max((c[0] for c in seen), default=0) + length
        n = max((c[1] for c in seen), default=0) + (length > 0)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._chain[t] = (k, n)
        # An in-place write into a view (pe[:, 0::2] = sin(angle)) also reaches its base.
        for arg, value in zip(func._schema.arguments, args, strict=False):
            if arg.alias_info is not None and arg.alias_info.is_write:
                for t in (value, getattr(value, "_base", None)):
                    if isinstance(t, torch.Tensor):
                        old = self._chain.get(t, (0, 0))
                        self._chain[t] = (max(old[0], k), max(old[1], n))
        self.longest = max(self.longest, k)
        self.longest_ops = max(self.longest_ops, n)
        return out

    def of(self, *tensors: torch.Tensor) -> int:
        """K for tensors computed inside (0 for one that was not)."""
        return max((self._chain.get(t, (0, 0))[0] for t in tensors), default=0)

    def ops_of(self, *tensors: torch.Tensor) -> int:
        """N, the rounding ops along the chain, for tensors computed inside."""
        return max((self._chain.get(t, (0, 0))[1] for t in tensors), default=0)

    def tolerance(self, dtype: torch.dtype, *tensors: torch.Tensor) -> Tolerance:
        if not tensors:
            return Tolerance(dtype, self.longest, self.longest_ops)
        return Tolerance(dtype, self.of(*tensors), self.ops_of(*tensors))


_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Tolerance:
    """The relative RMS error two computations may differ by: ``C * eps(dtype) * sqrt(k)``.

    For float16 and bfloat16, whose kernels accumulate in float32 and round each op's output
    once: ``C * sqrt(eps(float32)^2 * k + eps(dtype)^2 * ops)``, ``ops`` the rounding ops along
    the chain (at least one).
    """

    dtype: torch.dtype
    k: int
    ops: int = 0

    @property
    def value(self) -> float:
        if self.dtype in _HALF:
            acc, own = torch.finfo(torch.float32).eps, torch.finfo(self.dtype).eps
            return C * math.sqrt(acc**2 * self.k + own**2 * max(self.ops, 1))
        return C * torch.finfo(self.dtype).eps * math.sqrt(max(self.k, 1))

    def __str__(self) -> str:
        if self.dtype in _HALF:
            return (
                f"{self.value:.2e} = {C:g} * sqrt(eps(float32)^2 * K={self.k} "
                f"+ eps({self.dtype})^2 * N={max(self.ops, 1)})"
            )
        return f"{self.value:.2e} = {C:g} * eps({self.dtype}) * sqrt(K={self.k})"


def rms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean().sqrt()) if t.numel() else 0.0


def relative_error(actual: torch.Tensor, expected: torch.Tensor, floor: float = 0.0) -> float:
    """``rms(actual - expected) / max(rms(expected), floor)`` over the finite elements."""
    finite = torch.isfinite(expected)
    a, e = actual[finite].double(), expected[finite].double()
    scale = max(rms(e), floor)
    diff = rms(a - e)
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    tol: Tolerance,
    *,
    floor: float = 0.0,
    msg: str = "",
) -> float:
    """Assert the rule; return the relative error (for reports). Non-finite values must match."""
    where = f"{msg}: " if msg else ""
    assert actual.shape == expected.shape, f"{where}shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{where}dtype {actual.dtype} != {expected.dtype}"
    if not (actual.is_floating_point() or actual.is_complex()):
        assert torch.equal(actual, expected), f"{where}{actual.dtype} values differ"
        return 0.0
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isfinite(actual), finite), f"{where}inf/nan at other positions"
    assert torch.equal(actual[~finite], expected[~finite]), f"{where}inf/nan values differ"
    err = relative_error(actual, expected, floor)
    assert err <= tol.value, (
        f"{where}relative RMS error {err:.2e} (scale {max(rms(expected[finite]), floor):.3g}) "
        f"over tolerance {tol}"
    )
    return err


def assert_same(actual: Any, expected: Any, msg: str = "") -> None:
    """Bitwise equality, for the same kernels run on the same inputs (a compiled node that
    calls the very torch function a test calls, a saved and reloaded model): no rounding
    differs there, so no tolerance is due (NUMERICS.md)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=msg or None)
