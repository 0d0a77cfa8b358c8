"""How to build a module from a checked graph: one frozen :class:`BuildOptions`, made where a
build is asked for (:func:`archcomp.build`, ``archcomp build``, an artifact or checkpoint
loader) and read by :func:`archcomp.backends.torch.build.build_graph`.

Imports no torch: :mod:`archcomp.api` makes one before torch is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archcomp.backends.torch.devices import MAX_INIT_FLOPS


@dataclass(frozen=True)
class BuildOptions:
    """Where, in what dtype and how a module is built (see :func:`archcomp.build`)."""

    device: Any = None  # cpu, cuda, cuda:N, mps, meta, auto or a torch.device; None: cpu
    dtype: Any = None  # a name or a torch.dtype; None: float32
    seed: int | None = None  # bit-identical weights; None: torch's global RNG
    max_memory: int | str | None = None  # refuse a build whose peak exceeds it ("8GB")
    progress: bool | None = None  # allocation progress: None on a terminal, True, False
    max_init_flops: float | None = MAX_INIT_FLOPS  # refuse costlier initializers (None: any)
    activation_checkpointing: bool = False  # each repeated block recomputed in the backward
    # for loaders, which fill the weights after the build:
    init: bool = True  # run the spec's initializers
    extra_bytes: int = 0  # what the caller needs beside the module, counted in its peak
    params_on_meta: bool = False  # allocate only modules with buffers; parameters on meta
    command: str = "build"  # the command whose flags a refusal suggests (build, convert)
