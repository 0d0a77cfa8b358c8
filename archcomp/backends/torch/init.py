"""Applying the initializers named in specs (validated by :mod:`archcomp.passes.inits`), and
deterministic seeding.

Determinism: with a seed, each node's module is constructed right after seeding the RNG with
a value derived from (seed, node name), and each named initializer draws from its own
``torch.Generator`` seeded from (seed, node name, parameter name). So the same spec and seed
give bit-identical weights, and adding a node does not change the weights of the others.

Meta tensors have no values, so torch.nn's default initialisation of a module built on meta
does nothing but cost time (about half of constructing GPT-3's modules on meta):
:func:`meta_init_skipped` makes ``torch.nn.init``'s functions return meta tensors untouched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from archcomp.passes.inits import InitCall

if TYPE_CHECKING:
    import torch


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed from a user seed and names (stable across runs and platforms)."""
    h = _seed_hash(seed).copy()
    for p in parts:
        h.update(b"\0" + p.encode())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


@functools.lru_cache(maxsize=16)  # a build derives a seed per node from one user seed
def _seed_hash(seed: int) -> Any:
    return hashlib.sha256(str(seed).encode())


def _generator(device: torch.device, seed: int) -> torch.Generator:
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _sinusoids(param: torch.Tensor, layout: str) -> torch.Tensor:
    """The fixed position table of a [positions, d] parameter (Whisper's encoder positions)."""
    from archcomp.nn.positional import sinusoid_table

    return sinusoid_table(param.shape[0], param.shape[1], param.device, param.dtype, layout)


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
        "sinusoidal": lambda: param.copy_(_sinusoids(param, str(k["layout"]))),
    }
    with torch.no_grad():
        fns[call.name]()


def init_module(
    module: torch.nn.Module,
    plan: Mapping[str, InitCall],
    seed: int | None,
    node_name: str,
) -> None:
    """Apply a node's resolved initializers to its module's parameters (``module`` may be the
    node's own Parameter, whose name is ``""``)."""
    import torch

    if isinstance(module, torch.nn.Parameter):
        params: dict[str, Any] = {"": module}
    else:
        params = dict(module.named_parameters(remove_duplicate=False))
    for pname, call in plan.items():
        p = params.get(pname)
        if p is None or p.device.type == "meta":  # no values to draw (nor a generator there)
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

        value = derive_seed(self.seed, *parts)
        # Only the generators this build draws from (CPU, and the target accelerator):
        # torch.manual_seed would also reseed every CUDA device outside the fork.
        torch.random.default_generator.manual_seed(value)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device.index or 0):
                torch.cuda.manual_seed(value)
        elif self.device.type == "mps":
            torch.mps.manual_seed(value)

    def __exit__(self, *exc: Any) -> None:
        if self._fork is not None:
            self._fork.__exit__(*exc)


# torch.nn.init's in-place initializers, the ones module constructors reach through the module
# attribute (``init.kaiming_uniform_(self.weight, ...)``).
_TORCH_INITS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)
_lock = threading.Lock()
_depth = 0
_saved: dict[str, Callable[..., Any]] = {}


def _meta_passthrough(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def init(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(tensor, "is_meta", False):
            return tensor  # nothing to fill: same result, none of the decomposition's cost
        return fn(tensor, *args, **kwargs)

    init.__archcomp_meta_passthrough__ = True  # type: ignore[attr-defined]
    return init


@contextlib.contextmanager
def meta_init_skipped() -> Iterator[None]:
    """While active (in any thread), ``torch.nn.init``'s initializers return a meta tensor
    untouched; on every other device they run as usual, so a concurrent build or user code on
    a real device is unaffected. Nested and concurrent uses share one installation."""
    from torch.nn import init

    global _depth
    with _lock:
        if _depth == 0:
            for name in _TORCH_INITS:
                fn = getattr(init, name, None)
                if fn is not None and not hasattr(fn, "__archcomp_meta_passthrough__"):
                    _saved[name] = fn
                    setattr(init, name, _meta_passthrough(fn))
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for name, fn in _saved.items():
                    if hasattr(getattr(init, name), "__archcomp_meta_passthrough__"):
                        setattr(init, name, fn)  # not if someone patched it meanwhile
                _saved.clear()
