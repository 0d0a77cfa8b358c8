"""What a Mamba layer carries between decoding steps: its causal convolution's last inputs
(:class:`ConvState`) and its selective scan's state (:class:`ScanState`), the parts of a
:class:`~archcomp.nn.kv_cache.KVCache` for state-space layers.

A step of T new tokens costs O(T) whatever the tokens before it: the convolution reads its
``kernel - 1`` kept inputs and the new ones, the scan starts from the kept state (no rescan).
Left padding (the cache's first forward) is tuned out as transformers' Mamba does: the
convolution's input and the scan's input are zero at padding slots, so a padded row decodes as
it does alone.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from archcomp.nn.cache_state import CacheState


def _is_causal_cut(node: fx.Node, cut: int) -> bool:
    """``node`` is ``x[:, :, :-cut]``: the causal cut of a convolution padded on both sides."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return False
    index = node.args[1]
    whole = slice(None, None, None)
    return (
        isinstance(index, tuple)
        and len(index) == 3
        and index[0] == whole
        and index[1] == whole
        and index[2] == slice(None, -cut, None)
    )


def is_causal_conv(conv: nn.Module, node: fx.Node) -> bool:
    """A ``Conv1d`` called at ``node`` computes a causal convolution along the sequence: stride
    and dilation 1, zero padding of kernel - 1 on both sides, and its one use drops the last
    kernel - 1 positions (Mamba's ``conv1d`` then ``[:, :, :-(d_conv - 1)]``)."""
    if not isinstance(conv, nn.Conv1d):
        return False
    cut = conv.kernel_size[0] - 1
    plain = conv.stride == (1,) and conv.dilation == (1,) and conv.padding_mode == "zeros"
    users = list(node.users)
    return (
        plain and cut >= 1 and conv.padding == (cut,) and len(users) == 1
        and _is_causal_cut(users[0], cut)
    )  # fmt: skip


def causal_convs(model: nn.Module) -> set[str]:
    """Qualified names of the model's causal convolutions (:func:`is_causal_conv`)."""
    found: set[str] = set()
    for prefix, m in model.named_modules():
        graph = m.graph if isinstance(m, fx.GraphModule) else getattr(type(m), "graph", None)
        if not isinstance(graph, fx.Graph):
            continue
        for node in graph.nodes:
            if node.op != "call_module":
                continue
            target = str(node.target)
            if is_causal_conv(m.get_submodule(target), node):
                found.add(f"{prefix}.{target}" if prefix else target)
    return found


def _real(state: CacheState) -> Tensor | None:
    """(B, T) 1 at the new tokens that are real, 0 at left padding; None without padding."""
    if not state.padded:
        return None
    return state.valid[:, state.write]


class ConvState:
    """A causal convolution's last ``kernel - 1`` inputs (B, C_in, kernel - 1), zeros at first
    (the convolution's own padding). While its cache is bound, :meth:`hook` replaces the
    convolution's output with the convolution of the kept inputs and the new ones."""

    def __init__(self, conv: nn.Conv1d, state: CacheState, dtype: Any, device: Any) -> None:
        self.state = state
        self.cut = conv.kernel_size[0] - 1
        self.window = torch.zeros(
            state.batch_size, conv.in_channels, self.cut, dtype=dtype, device=device
        )  # (B, C_in, K - 1)

    def hook(self, conv: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        """A forward hook: for input x (B, C_in, T), the outputs (B, C_out, T) at the new
        positions, then K - 1 zeros the causal cut drops; the window moves on by T."""
        x = args[0]  # (B, C_in, T)
        real = _real(self.state)
        if real is not None:
            x = x * real[:, None, :].to(x.dtype)  # padding tuned out
        full = torch.cat([self.window, x.to(self.window.dtype)], dim=2)  # (B, C_in, K - 1 + T)
        self.window.copy_(full[:, :, -self.cut :])
        assert isinstance(conv, nn.Conv1d)
        out = F.conv1d(full, conv.weight, conv.bias, groups=conv.groups)  # (B, C_out, T)
        return F.pad(out, (0, self.cut))  # (B, C_out, T + K - 1)

    def reset(self) -> None:
        self.window.zero_()

    @property
    def tensors(self) -> dict[str, Tensor]:
        return {"conv": self.window}

    @property
    def nbytes(self) -> int:
        return self.window.nbytes


class ScanState:
    """A selective scan's state h (B, D, N) after the tokens written, zeros at first; kept in
    the scan's working dtype (float32 at least)."""

    def __init__(self, scan: Any, state: CacheState, dtype: Any, device: Any) -> None:
        self.state = state
        work = torch.promote_types(dtype, torch.float32)
        shape = (state.batch_size, scan.num_features, scan.d_state)
        self.h = torch.zeros(shape, dtype=work, device=device)  # (B, D, N)

    def mask(self, u: Tensor) -> Tensor:
        """The scan's input u (B, D, T), zero at left padding (the state stays zero there)."""
        real = _real(self.state)
        return u if real is None else u * real[:, None, :].to(u.dtype)

    def reset(self) -> None:
        self.h.zero_()

    @property
    def tensors(self) -> dict[str, Tensor]:
        return {"ssm": self.h}

    @property
    def nbytes(self) -> int:
        return self.h.nbytes
