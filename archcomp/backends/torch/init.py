"""Parameter initializers named in specs, and deterministic seeding.

A node's ``init`` maps parameter names to initializers::

    init: {weight: xavier_uniform, bias: zeros}
    init: {weight: {normal: {std: 0.02}}}
    init: xavier_uniform            # stored as {"*": ...}: every parameter with >= 2 dims

A key selects the parameters whose name is the key (``weight``), ends with ``.key``
(``weight`` also selects ``q_proj.weight``) or starts with ``key.`` (``q_proj`` selects
``q_proj.weight`` and ``q_proj.bias``). Parameters no key selects keep torch.nn's default.

Determinism: with a seed, each node's module is constructed right after seeding the RNG with
a value derived from (seed, node name), and each named initializer draws from its own
``torch.Generator`` seeded from (seed, node name, parameter name). So the same spec and seed
give bit-identical weights, and adding a node does not change the weights of the others.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archcomp.errors import Diagnostic, did_you_mean

if TYPE_CHECKING:
    import torch

    from archcomp.ir import Graph, Node


@dataclass(frozen=True)
class Initializer:
    """One named initializer: its allowed arguments (with defaults) and what it needs."""

    name: str
    defaults: Mapping[str, float | str]
    min_dims: int = 0  # fan-based initializers need a matrix or a kernel


INITIALIZERS: dict[str, Initializer] = {
    i.name: i
    for i in (
        Initializer("xavier_uniform", {"gain": 1.0}, 2),
        Initializer("xavier_normal", {"gain": 1.0}, 2),
        Initializer(
            "kaiming_uniform", {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"}, 2
        ),
        Initializer(
            "kaiming_normal", {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"}, 2
        ),
        Initializer("orthogonal", {"gain": 1.0}, 2),
        Initializer("normal", {"mean": 0.0, "std": 1.0}),
        Initializer("uniform", {"a": 0.0, "b": 1.0}),
        Initializer("trunc_normal", {"mean": 0.0, "std": 1.0, "a": -2.0, "b": 2.0}),
        Initializer("constant", {"value": 0.0}),
        Initializer("zeros", {}),
        Initializer("ones", {}),
    )
}


@dataclass(frozen=True)
class InitCall:
    """A resolved initializer for one parameter."""

    name: str
    kwargs: Mapping[str, float | str]


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed from a user seed and names (stable across runs and platforms)."""
    h = hashlib.sha256(str(seed).encode())
    for p in parts:
        h.update(b"\0" + p.encode())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


def _selects(key: str, param: str) -> bool:
    if key == "*":
        return True
    return param == key or param.endswith("." + key) or param.startswith(key + ".")


def resolve_node_init(
    node: Node, param_shapes: Mapping[str, tuple[Any, ...]]
) -> tuple[dict[str, InitCall], list[Diagnostic]]:
    """Parameter name -> initializer for one node, or located diagnostics."""
    out: dict[str, InitCall] = {}
    diags: list[Diagnostic] = []
    doc, base = node.origin.doc, (*node.origin.path, "init")
    for key, spec in node.init.items():
        path = base if key == "*" else (*base, key)
        if spec is None:
            continue
        call, problem = _parse(spec)
        if call is None:
            hint = None
            if problem and problem.startswith("unknown initializer"):
                word = spec if isinstance(spec, str) else next(iter(spec), "")
                hint = did_you_mean(str(word), INITIALIZERS) or (
                    "initializers: " + ", ".join(INITIALIZERS)
                )
            diags.append(
                doc.diag(
                    "bad-init",
                    problem or "bad initializer",
                    path,
                    node=node.name,
                    op=node.op.name,
                    hint=hint,
                )
            )
            continue
        chosen = [p for p in param_shapes if _selects(key, p)]
        if key == "*":
            chosen = [p for p in chosen if len(param_shapes[p]) >= 2]
        if not chosen and key != "*":
            names = list(param_shapes)
            diags.append(
                doc.diag(
                    "bad-init",
                    f"op '{node.op.name}' has no parameter '{key}'",
                    path,
                    key=True,
                    node=node.name,
                    op=node.op.name,
                    hint=did_you_mean(key, names)
                    or (f"parameters: {', '.join(names)}" if names else "this op has none"),
                )
            )
            continue
        need = INITIALIZERS[call.name].min_dims
        for p in chosen:
            shape = param_shapes[p]
            if len(shape) < need:
                diags.append(
                    doc.diag(
                        "bad-init",
                        f"{call.name} needs a parameter with at least {need} dims; "
                        f"{p} has shape {list(shape)}",
                        path,
                        node=node.name,
                        op=node.op.name,
                        hint="use normal, uniform, zeros, ones or constant for vectors",
                    )
                )
                continue
            # An exact name beats a wildcard or a suffix match.
            if p not in out or key == p:
                out[p] = call
    return out, diags


def _parse(spec: Any) -> tuple[InitCall | None, str | None]:
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        name, raw = next(iter(spec.items()))
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            return None, f"arguments of '{name}' must be a mapping, e.g. {{{name}: {{...}}}}"
        kwargs = dict(raw)
    else:
        return None, "an initializer is a name or {name: {args}}, e.g. {normal: {std: 0.02}}"
    init = INITIALIZERS.get(str(name))
    if init is None:
        return None, f"unknown initializer '{name}'"
    resolved: dict[str, float | str] = dict(init.defaults)
    for k, v in kwargs.items():
        if k not in init.defaults:
            allowed = ", ".join(init.defaults) or "none"
            return None, f"{name} has no argument '{k}' (arguments: {allowed})"
        want = init.defaults[k]
        if isinstance(want, str):
            if not isinstance(v, str):
                return None, f"{name}: '{k}' must be a string, found {v!r}"
        elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None, f"{name}: '{k}' must be a finite number, found {v!r}"
        resolved[k] = float(v) if not isinstance(want, str) else v
    if name in ("normal", "trunc_normal") and float(resolved["std"]) < 0:
        return None, f"{name}: std must be >= 0, found {resolved['std']}"
    return InitCall(str(name), resolved), None


def check_inits(g: Graph) -> tuple[dict[str, dict[str, InitCall]], list[Diagnostic]]:
    """Resolve every node's ``init``; all problems are returned together."""
    plans: dict[str, dict[str, InitCall]] = {}
    diags: list[Diagnostic] = []
    for node in g.nodes.values():
        if not node.init:
            continue
        plan, problems = resolve_node_init(node, node.op.param_shapes(node.args))
        diags.extend(problems)
        if plan:
            plans[node.name] = plan
    return plans, diags


def _generator(device: torch.device, seed: int) -> torch.Generator:
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def apply_init(
    param: torch.Tensor, call: InitCall, generator: torch.Generator | None = None
) -> None:
    """Fill ``param`` in place (under no_grad). Nothing happens on the meta device."""
    import torch
    from torch import nn

    if param.device.type == "meta":
        return
    k = call.kwargs
    fns: dict[str, Callable[[], Any]] = {
        "xavier_uniform": lambda: nn.init.xavier_uniform_(
            param, gain=float(k["gain"]), generator=generator
        ),
        "xavier_normal": lambda: nn.init.xavier_normal_(
            param, gain=float(k["gain"]), generator=generator
        ),
        "kaiming_uniform": lambda: nn.init.kaiming_uniform_(
            param,
            a=float(k["a"]),
            mode=str(k["mode"]),  # type: ignore[arg-type]
            nonlinearity=str(k["nonlinearity"]),  # type: ignore[arg-type]
            generator=generator,
        ),
        "kaiming_normal": lambda: nn.init.kaiming_normal_(
            param,
            a=float(k["a"]),
            mode=str(k["mode"]),  # type: ignore[arg-type]
            nonlinearity=str(k["nonlinearity"]),  # type: ignore[arg-type]
            generator=generator,
        ),
        "orthogonal": lambda: nn.init.orthogonal_(
            param, gain=float(k["gain"]), generator=generator
        ),
        "normal": lambda: nn.init.normal_(
            param, float(k["mean"]), float(k["std"]), generator=generator
        ),
        "uniform": lambda: nn.init.uniform_(
            param, float(k["a"]), float(k["b"]), generator=generator
        ),
        "trunc_normal": lambda: nn.init.trunc_normal_(
            param,
            float(k["mean"]),
            float(k["std"]),
            float(k["a"]),
            float(k["b"]),
            generator=generator,
        ),
        "constant": lambda: nn.init.constant_(param, float(k["value"])),
        "zeros": lambda: nn.init.zeros_(param),
        "ones": lambda: nn.init.ones_(param),
    }
    with torch.no_grad():
        fns[call.name]()


def init_module(
    module: torch.nn.Module,
    plan: Mapping[str, InitCall],
    seed: int | None,
    node_name: str,
) -> None:
    """Apply a node's resolved initializers to its module's parameters."""
    params = dict(module.named_parameters(remove_duplicate=False))
    for pname, call in plan.items():
        p = params.get(pname)
        if p is None:
            continue
        gen = (
            _generator(p.device, derive_seed(seed, node_name, pname)) if seed is not None else None
        )
        apply_init(p, call, gen)


class SeededRNG:
    """Context manager: fork torch's RNGs (CPU and the target device) so a seeded build leaves
    the caller's global RNG state untouched; ``reseed(name)`` seeds it for one node."""

    def __init__(self, seed: int | None, device: torch.device):
        self.seed = seed
        self.device = device
        self._fork: Any = None

    def __enter__(self) -> SeededRNG:
        if self.seed is not None:
            import torch

            devices: list[Any] = []
            kind = self.device.type
            if kind == "cuda":
                devices = [self.device.index or 0]
            self._fork = torch.random.fork_rng(
                devices=devices, device_type=kind if kind in ("cuda", "mps") else "cuda"
            )
            self._fork.__enter__()
        return self

    def reseed(self, *parts: str) -> None:
        if self.seed is None or self.device.type == "meta":
            return
        import torch

        torch.manual_seed(derive_seed(self.seed, *parts))

    def __exit__(self, *exc: Any) -> None:
        if self._fork is not None:
            self._fork.__exit__(*exc)


def iter_selected(names: Mapping[str, Any], key: str) -> Iterator[str]:
    """Parameter names a key selects (for docs and tests)."""
    return (n for n in names if _selects(key, n))
