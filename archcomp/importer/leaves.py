"""torch.nn leaf modules as archcomp op nodes: each entry reads a module's constructor values
and gives the op and its arguments (``None`` where the module cannot be expressed exactly)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

Op = tuple[str, dict[str, Any]]


def _one(v: Any) -> Any:
    """A size tuple as written in specs: one int when every entry is the same."""
    if isinstance(v, tuple | list):
        return v[0] if len(set(v)) == 1 else list(v)
    return v


def _linear(m: nn.Linear) -> Op:
    return "linear", {
        "out_features": m.out_features,
        **({} if m.bias is not None else {"bias": False}),
    }


def _conv(m: nn.Conv1d | nn.Conv2d) -> Op | str:
    if m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r} (only 'zeros')"
    args: dict[str, Any] = {"out_channels": m.out_channels, "kernel_size": _one(m.kernel_size)}
    extra = {
        "stride": _one(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else _one(m.padding),
        "dilation": _one(m.dilation),
        "groups": m.groups,
    }
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    args |= {k: v for k, v in extra.items() if v != defaults[k]}
    if m.bias is None:
        args["bias"] = False
    return ("conv1d" if isinstance(m, nn.Conv1d) else "conv2d"), args


def _layer_norm(m: nn.LayerNorm) -> Op | str:
    if len(m.normalized_shape) != 1:
        return f"normalized_shape={tuple(m.normalized_shape)} (only the last dim)"
    args: dict[str, Any] = {"eps": m.eps}
    if not m.elementwise_affine:
        args["elementwise_affine"] = False
    elif m.bias is None:
        args["bias"] = False
    return "layer_norm", args


def _rms_norm(m: nn.RMSNorm) -> Op | str:
    if len(m.normalized_shape) != 1:
        return f"normalized_shape={tuple(m.normalized_shape)} (only the last dim)"
    import torch

    eps = m.eps if m.eps is not None else torch.finfo(torch.float32).eps  # torch's None: float32
    args: dict[str, Any] = {"eps": eps}
    if not m.elementwise_affine:
        args["elementwise_affine"] = False
    return "rms_norm", args


def _batch_norm(m: nn.BatchNorm1d | nn.BatchNorm2d) -> Op:
    args: dict[str, Any] = {"eps": m.eps}
    if m.momentum != 0.1:
        args["momentum"] = m.momentum
    if not m.affine:
        args["affine"] = False
    if not m.track_running_stats:
        args["track_running_stats"] = False
    return "batch_norm", args


def _embedding(m: nn.Embedding) -> Op | str:
    if m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
        return "max_norm, scale_grad_by_freq or sparse"
    args: dict[str, Any] = {"num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim}
    if m.padding_idx is not None:
        args["padding_idx"] = m.padding_idx
    return "embedding", args


def _pool(m: nn.MaxPool1d | nn.MaxPool2d | nn.AvgPool1d | nn.AvgPool2d) -> Op | str:
    kind = "max" if isinstance(m, nn.MaxPool1d | nn.MaxPool2d) else "avg"
    rank = "1d" if isinstance(m, nn.MaxPool1d | nn.AvgPool1d) else "2d"
    args: dict[str, Any] = {"kernel_size": _one(m.kernel_size)}
    if _one(m.stride) != args["kernel_size"]:
        args["stride"] = _one(m.stride)
    if _one(m.padding) != 0:
        args["padding"] = _one(m.padding)
    if m.ceil_mode:
        args["ceil_mode"] = True
    if kind == "max":
        if getattr(m, "return_indices", False):
            return "return_indices=True"
        if _one(m.dilation) != 1:  # type: ignore[union-attr]
            args["dilation"] = _one(m.dilation)  # type: ignore[union-attr]
    else:
        if getattr(m, "divisor_override", None) is not None:
            return "divisor_override"
        if not m.count_include_pad:  # type: ignore[union-attr]
            args["count_include_pad"] = False
    return f"{kind}_pool{rank}", args


def _recurrent(m: nn.LSTM | nn.GRU | nn.RNN) -> Op | str:
    if getattr(m, "proj_size", 0):
        return "proj_size (LSTM projections)"
    args: dict[str, Any] = {"hidden_size": m.hidden_size}
    if m.num_layers != 1:
        args["num_layers"] = m.num_layers
    if not m.bias:
        args["bias"] = False
    if not m.batch_first:
        args["batch_first"] = False
    if m.dropout:
        args["dropout"] = m.dropout
    if m.bidirectional:
        args["bidirectional"] = True
    if isinstance(m, nn.RNN) and m.nonlinearity != "tanh":
        args["nonlinearity"] = m.nonlinearity
    return type(m).__name__.lower(), args


def _plain(op: str, **read: Callable[[Any], Any]) -> Callable[[nn.Module], Op]:
    return lambda m: (op, {k: f(m) for k, f in read.items()})


LEAVES: dict[type, Callable[[Any], Op | str]] = {
    nn.Linear: _linear,
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.LayerNorm: _layer_norm,
    nn.RMSNorm: _rms_norm,
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.Embedding: _embedding,
    nn.MaxPool1d: _pool,
    nn.MaxPool2d: _pool,
    nn.AvgPool1d: _pool,
    nn.AvgPool2d: _pool,
    nn.LSTM: _recurrent,
    nn.GRU: _recurrent,
    nn.RNN: _recurrent,
    nn.ReLU: _plain("relu"),
    nn.SiLU: _plain("silu"),
    nn.Tanh: _plain("tanh"),
    nn.Sigmoid: _plain("sigmoid"),
    nn.GELU: lambda m: ("gelu", {} if m.approximate == "none" else {"approximate": m.approximate}),
    nn.Dropout: lambda m: ("dropout", {"p": m.p}),
    nn.Softmax: lambda m: ("softmax", {"dim": m.dim}) if m.dim is not None else "dim=None",
    nn.Flatten: lambda m: ("flatten", {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    nn.AdaptiveAvgPool1d: lambda m: ("adaptive_avg_pool1d", {"output_size": _one(m.output_size)}),
    nn.AdaptiveAvgPool2d: lambda m: ("adaptive_avg_pool2d", {"output_size": _one(m.output_size)}),
}

# Results of the multi-result ops, as the module returns them (LSTM: output, (h_n, c_n)).
RESULTS: dict[str, tuple[Any, ...]] = {
    "lstm": ("output", ("h_n", "c_n")),
    "gru": ("output", "h_n"),
    "rnn": ("output", "h_n"),
}


def leaf_op(m: nn.Module) -> Op | str | None:
    """The op of a leaf module; a reason string where it cannot be expressed; None when its
    type is unknown (``nn.Identity`` is handled by the caller: it is no node)."""
    fn = LEAVES.get(type(m))
    return None if fn is None else fn(m)
