"""E feed-forward experts run on rows sorted by expert, as one opaque torch operator.

How many rows each expert gets is data. Hidden inside ``torch.ops.archcomp.grouped_experts``
(a ``torch.library.custom_op`` with a fake kernel: the output is shaped like the input), the
split by expert never reaches a tracer, so ``torch.compile(fullgraph=True)`` and
``torch.export`` see one node of static shape. The backward is a second such operator; the
forward saves the experts' first projection (M, 2F) and nothing else of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _gelu_tanh(t: Tensor) -> Tensor:
    return F.gelu(t, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "relu": F.relu,
}


def _hidden(h: Tensor, gated: bool, act: Callable[[Tensor], Tensor]) -> Tensor:
    """The first projection (n, 2F) or (n, F) -> the down projection's input (n, F)."""
    if gated:
        gate, up = h.chunk(2, dim=-1)  # (n, F) each
        return act(gate) * up
    return act(h)


def _act_backward(grad: Tensor, t: Tensor, activation: str) -> Tensor:
    """grad * act'(t), by the kernels autograd itself uses for each activation."""
    aten = torch.ops.aten
    if activation == "silu":
        return aten.silu_backward(grad, t)
    if activation == "relu":
        return aten.threshold_backward(grad, F.relu(t), 0)
    return aten.gelu_backward(grad, t, approximate="tanh" if activation == "gelu_tanh" else "none")


def _forward(
    x: Tensor, counts: Tensor, up: Tensor, down: Tensor, gated: bool, activation: str
) -> tuple[Tensor, Tensor]:
    """x (M, d) sorted by expert, counts (E,) -> (y (M, d), first projection (M, 2F|F))."""
    act = ACTIVATIONS[activation]
    sizes = counts.tolist()
    y, h = torch.empty_like(x), x.new_empty(x.shape[0], up.shape[1])  # written in place
    for e, (x_e, y_e, h_e) in enumerate(
        zip(x.split(sizes), y.split(sizes), h.split(sizes), strict=True)
    ):
        torch.mm(x_e, up[e].T, out=h_e)  # (n_e, 2F|F); an expert without rows: (0, ...)
        torch.mm(_hidden(h_e, gated, act), down[e].T, out=y_e)  # (n_e, d)
    return y, h


def _backward(
    gy: Tensor,
    x: Tensor,
    h: Tensor,
    counts: Tensor,
    up: Tensor,
    down: Tensor,
    gated: bool,
    activation: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of x (M, d), up (E, 2F|F, d) and down (E, d, F) per expert from the output's
    gy (M, d) and the saved first projection h (M, 2F|F)."""
    act = ACTIVATIONS[activation]
    sizes = counts.tolist()
    # written in place, expert by expert (no rows: the empty products give zeros)
    gx, gup, gdown = torch.empty_like(x), torch.empty_like(up), torch.empty_like(down)
    rows = zip(gy.split(sizes), x.split(sizes), h.split(sizes), gx.split(sizes), strict=True)
    for e, (g_e, x_e, h_e, gx_e) in enumerate(rows):  # (n_e, d), (n_e, d), (n_e, 2F|F), (n_e, d)
        ga_e = g_e @ down[e]  # (n_e, F): gradient of the down projection's input
        if gated:  # the activation once, for the down projection's input and the up's grad
            gate, up_e = h_e.chunk(2, dim=-1)  # (n_e, F) each
            a_e = act(gate)  # (n_e, F)
            torch.mm(g_e.T, a_e * up_e, out=gdown[e])  # (d, F)
            gh_e = torch.cat([_act_backward(ga_e * up_e, gate, activation), ga_e * a_e], -1)
        else:
            torch.mm(g_e.T, act(h_e), out=gdown[e])  # (d, F)
            gh_e = _act_backward(ga_e, h_e, activation)  # (n_e, F)
        torch.mm(gh_e.T, x_e, out=gup[e])  # (2F|F, d)
        torch.mm(gh_e, up[e], out=gx_e)  # (n_e, d)
    return gx, gup, gdown


def _op(name: str, fn: Callable[..., Any], fake: Callable[..., Any]) -> Any:
    """Registers ``archcomp::name`` once per process (the emitted standalone source defines
    the same operator again: it reuses the first)."""
    ns = torch.ops.archcomp
    if hasattr(ns, name):
        return getattr(ns, name).default
    op = torch.library.custom_op(f"archcomp::{name}", fn, mutates_args=())
    op.register_fake(fake)
    return op


def _forward_fake(
    x: Tensor, counts: Tensor, up: Tensor, down: Tensor, gated: bool, activation: str
) -> tuple[Tensor, Tensor]:
    return x.new_empty(x.shape), x.new_empty(x.shape[0], up.shape[1])


def _backward_fake(
    gy: Tensor,
    x: Tensor,
    h: Tensor,
    counts: Tensor,
    up: Tensor,
    down: Tensor,
    gated: bool,
    activation: str,
) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(up), torch.empty_like(down)


_grouped_forward = _op("grouped_experts", _forward, _forward_fake)
_grouped_backward = _op("grouped_experts_backward", _backward, _backward_fake)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    x, counts, up, down, gated, activation = inputs
    ctx.save_for_backward(x, output[1], counts, up, down)
    ctx.gated, ctx.activation = gated, activation
    ctx.set_materialize_grads(False)  # no (M, 2F) zeros for the unused projection output


def _autograd(ctx: Any, gy: Tensor, gh: Tensor | None) -> tuple[Any, ...]:
    x, h, counts, up, down = ctx.saved_tensors
    gx, gup, gdown = _grouped_backward(gy, x, h, counts, up, down, ctx.gated, ctx.activation)
    return gx, None, gup, gdown, None, None


if hasattr(_grouped_forward, "register_autograd"):  # not when reused: registered once
    _grouped_forward.register_autograd(_autograd, setup_context=_setup_context)


def grouped_experts(
    x: Tensor, counts: Tensor, up: Tensor, down: Tensor, gated: bool, activation: str
) -> Tensor:
    """x (M, d), rows sorted by expert with ``counts[e]`` (E,) rows for expert e; stacked
    weights up (E, 2F, d) (gate rows, then up rows) or (E, F, d) ungated, down (E, d, F)
    -> (M, d): ``down_e(act(gate_e x) * up_e x)`` (or ``down_e(act(up_e x))``) per row."""
    return _grouped_forward(x, counts, up, down, gated, activation)[0]
