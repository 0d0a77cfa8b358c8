"""``nn.Linear`` constructed without torch.nn's per-module overhead, weights unchanged.

Constructing ``nn.Linear`` runs ``Module.__setattr__`` per attribute and reaches its
initialisation through ``kaiming_uniform_``'s dispatch checks and ``calculate_gain``: about
40% of lowering a 20,000-node chain. :func:`new_linear` builds the same module (type,
attributes, parameters) and draws the same values from the same RNG in the same order
(``weight.uniform_(-b, b)`` then ``bias.uniform_(-b, b)``, ``b`` computed as torch does); it
takes torch's own path whenever anything could make them differ: a meta device, a module or
parameter registration hook, a torch function mode, or ``nn.Linear`` or the initializers it
calls replaced.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import init
from torch.nn.modules import module as _module

_LINEAR_INIT = nn.Linear.__init__
_LINEAR_RESET = nn.Linear.reset_parameters
_KAIMING = init.kaiming_uniform_
_UNIFORM = init.uniform_
# kaiming_uniform_(w, a=sqrt(5)) on fan_in f: bound = sqrt(3) * gain / sqrt(f), with torch's
# own order of operations (gain = sqrt(2 / (1 + a**2))).
_GAIN = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
_SQRT3 = math.sqrt(3.0)


def _same_init(fn: Any, original: Any) -> bool:
    """``fn`` is ``original``, or archcomp's meta pass-through of it (same off meta)."""
    if fn is original:
        return True
    ours = getattr(fn, "__archcomp_meta_passthrough__", False)  # not any functools.wraps
    return bool(ours) and getattr(fn, "__wrapped__", None) is original


def _torch_path(device: torch.device) -> bool:
    return (
        device.type == "meta"
        or nn.Linear.__init__ is not _LINEAR_INIT
        or nn.Linear.reset_parameters is not _LINEAR_RESET
        or not _same_init(init.kaiming_uniform_, _KAIMING)
        or not _same_init(init.uniform_, _UNIFORM)
        or bool(_module._global_module_registration_hooks)
        or bool(_module._global_parameter_registration_hooks)
        or torch._C._is_torch_function_mode_enabled()
    )


def new_linear(
    in_features: int,
    out_features: int,
    bias: bool,
    device: torch.device,
    dtype: torch.dtype | None,
) -> nn.Linear:
    """``nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)``."""
    if in_features <= 0 or _torch_path(device):
        return nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
    m = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(m)
    d = m.__dict__  # a fresh module: Module.__setattr__ would store plain values here too
    d["in_features"] = in_features
    d["out_features"] = out_features
    weight = torch.empty((out_features, in_features), device=device, dtype=dtype)
    b = torch.empty(out_features, device=device, dtype=dtype) if bias else None
    bound = _SQRT3 * (_GAIN / math.sqrt(in_features))
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if b is not None:
            bb = 1 / math.sqrt(in_features)
            b.uniform_(-bb, bb)
    params = m._parameters
    params["weight"] = nn.Parameter(weight)
    params["bias"] = nn.Parameter(b) if b is not None else None
    return m
