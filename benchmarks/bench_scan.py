"""The selective scan and the Mamba mixer block vs transformers' torch path (its recurrent loop).

    .venv/bin/python benchmarks/bench_scan.py [--repeat 10] [--device cpu] [--length 256]
    .venv/bin/python benchmarks/bench_scan.py --device cuda --length 1024

Two comparisons, each for the loop (``algorithm: sequential``), the chunked parallel scan and
``auto`` (the default: the loop forward-only on CPU, the chunked scan under autograd):
- scan: archcomp's SelectiveScan against transformers' ``mamba_selective_scan`` on the same
  inputs (x, delta, B, C, z, delta_bias, softplus);
- mixer: the shipped ``mamba_mixer`` block compiled against transformers' ``MambaMixer`` (its
  weights copied in), d_model 128 (inner 256), d_state 16, d_conv 4.
Batch 2. Outputs are checked equal first. Measured alternately in one run (ABBA order, so
drift and cache warmth hit both sides alike): forward (no_grad) and forward + backward (of
the output's sum). Denormals are flushed. Prints the ratio archcomp / transformers; the goal
is auto <= 1.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import archcomp
from archcomp.nn.scan import SelectiveScan

D_MODEL, D_STATE, D_CONV, EXPAND, DT_RANK, BATCH = 128, 16, 4, 2, 8, 2
INNER = EXPAND * D_MODEL

MIXER = f"""\
archcomp: 1
name: bench
imports: [{{library: mamba, blocks: [mamba_mixer]}}]
inputs: {{x: [B, L, {D_MODEL}]}}
nodes:
  - {{id: mixer, op: mamba_mixer, d_model: {D_MODEL}, d_state: {D_STATE}, d_conv: {D_CONV},
     expand: {EXPAND}, dt_rank: {DT_RANK}}}
outputs: {{y: mixer}}
"""


def hf_mixer() -> nn.Module:
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer
    from transformers.utils import logging

    logging.set_verbosity_error()
    cfg = MambaConfig(
        hidden_size=D_MODEL, state_size=D_STATE, conv_kernel=D_CONV, expand=EXPAND,
        time_step_rank=DT_RANK, num_hidden_layers=1, use_mambapy=False,
        use_associative_scan=False,
    )  # fmt: skip
    return MambaMixer(cfg, layer_idx=0)


def set_algorithm(model: nn.Module, algorithm: str) -> None:
    for m in model.modules():
        if isinstance(m, SelectiveScan):
            m.algorithm = algorithm


def measure(ours: Callable[[], Any], ref: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median seconds of each, run alternately (ABBA) after two warm-up rounds."""
    for _ in range(2):
        ours(), ref()
    mine: list[float] = []
    other: list[float] = []
    for i in range(repeat):
        pair = ((ours, mine), (ref, other)) if i % 2 == 0 else ((ref, other), (ours, mine))
        for fn, times in pair:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(mine), statistics.median(other)


def runner(fn: Callable[..., torch.Tensor], args: tuple[Any, ...], grad: bool, dev: Any) -> Any:
    def run() -> Any:
        if grad:
            out = fn(*args)
            out.backward(torch.ones_like(out))
        else:
            with torch.no_grad():
                out = fn(*args)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    return run


Case = tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor], tuple, nn.Module]


def scan_case(length: int, dev: Any) -> Case:
    """(archcomp, transformers, inputs, the module holding archcomp's scan)"""
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    g = torch.Generator().manual_seed(0)
    shapes = (
        [(BATCH, INNER, length)] * 2 + [(BATCH, D_STATE, length)] * 2 + [(BATCH, INNER, length)]
    )
    xs = [torch.randn(s, generator=g).to(dev).requires_grad_() for s in shapes]
    bias = (torch.randn(INNER, generator=g) * 0.5).to(dev)
    scan = SelectiveScan(INNER, D_STATE, delta_softplus=True, device=dev)

    def ours(*a: torch.Tensor) -> torch.Tensor:
        return scan(*a, delta_bias=bias)

    def ref(u: Any, dt: Any, b: Any, c: Any, z: Any) -> torch.Tensor:
        A = -torch.exp(scan.A_log.float())
        return mamba_selective_scan(
            u, dt, A, b, c, D=scan.D, z=z, delta_bias=bias, delta_softplus=True
        )

    return ours, ref, tuple(xs), scan


def mixer_case(length: int, dev: Any) -> Case:
    ref = hf_mixer().to(dev)
    model = archcomp.build(MIXER, device=dev, seed=0)
    name = {k: f"mixer.ssm.{k}" if k in ("A_log", "D") else f"mixer.{k}" for k in ref.state_dict()}
    model.load_state_dict({name[k]: v for k, v in ref.state_dict().items()})
    x = torch.randn(BATCH, length, D_MODEL, device=dev, requires_grad=True)
    return model, ref, (x,), model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    print(
        f"batch {BATCH}, length {args.length}, inner {INNER}, d_state {D_STATE}; {dev}; "
        "ratio = archcomp / transformers"
    )
    for case, make in (("scan", scan_case), ("mixer", mixer_case)):
        ours, ref, xs, holder = make(args.length, dev)
        for algorithm in ("sequential", "chunked", "auto"):
            set_algorithm(holder, algorithm)
            with torch.no_grad():
                torch.testing.assert_close(ours(*xs), ref(*xs), atol=1e-4, rtol=1e-4)
            for what, grad in (("forward", False), ("fwd + bwd", True)):
                a, b = measure(runner(ours, xs, grad, dev), runner(ref, xs, grad, dev), args.repeat)
                print(
                    f"{case:5s} {algorithm:10s} {what:9s}  archcomp {a * 1e3:8.2f} ms  "
                    f"transformers {b * 1e3:8.2f} ms  ratio {a / b:.2f}"
                )


if __name__ == "__main__":
    main()
