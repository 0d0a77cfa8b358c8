"""Compiled specs/llama.yaml vs transformers' LlamaForCausalLM (sdpa), small sizes.

    .venv/bin/python benchmarks/bench_llama.py [--repeat 10] [--device cpu] [--threads N]
    .venv/bin/python benchmarks/bench_llama.py --device cuda --dtype bfloat16

4 layers, d_model 512, 8 query heads and 2 key/value heads (grouped-query), SwiGLU 1536,
vocabulary 32000, RoPE theta 500000; batch 4, length 128. Both sides are built from the same
sizes and the compiled one gets the reference's weights (its logits are checked first).
Measured alternately in one run (ABBA order, so drift and cache warmth hit both sides
alike): forward (eval, no_grad) and forward + backward (cross-entropy; no optimizer update,
so both keep the same weights). Denormals are flushed. Prints the ratio compiled / reference;
the goal is <= 1.00 on CPU.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import archcomp

SPEC = Path(__file__).resolve().parent.parent / "specs" / "llama.yaml"
SIZES = {
    "N": 4,
    "d_model": 512,
    "h": 8,
    "n_kv_heads": 2,
    "d_ff": 1536,
    "vocab": 32000,
    "context": 512,
    "eps": 1e-5,
    "rope_theta": 500000.0,
}
B, T = 4, 128


def reference() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=SIZES["vocab"],
        hidden_size=SIZES["d_model"],
        intermediate_size=SIZES["d_ff"],
        num_hidden_layers=SIZES["N"],
        num_attention_heads=SIZES["h"],
        num_key_value_heads=SIZES["n_kv_heads"],
        max_position_embeddings=SIZES["context"],
        rms_norm_eps=SIZES["eps"],
        rope_parameters={"rope_type": "default", "rope_theta": SIZES["rope_theta"]},
        tie_word_embeddings=False,
        use_cache=False,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg)


def hf_name(name: str) -> str:
    """Our parameter name -> transformers' (a prefix, and o_proj for out_proj)."""
    name = re.sub(r"\.out_proj\.", ".o_proj.", name)
    return name if name.startswith("lm_head") else f"model.{name}"


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    ref = reference().to(dev)
    model = archcomp.build(SPEC, params=SIZES, device=dev, seed=0)
    theirs = dict(ref.named_parameters())
    with torch.no_grad():  # in float32, then both sides are cast alike
        for name, p in model.named_parameters():
            p.copy_(theirs[hf_name(name)])
    ref.to(dtype), model.to(dtype)
    n_ours = sum(p.numel() for p in model.parameters())
    assert n_ours == sum(p.numel() for p in ref.parameters())
    ids = torch.randint(0, SIZES["vocab"], (B, T), device=dev)
    labels = torch.randint(0, SIZES["vocab"], (B, T), device=dev)
    ref.eval(), model.eval()
    with torch.no_grad():
        ours, want = model(ids).float(), ref(ids).logits.float()
    if dtype == torch.float32:
        torch.testing.assert_close(ours, want, atol=2e-4, rtol=2e-4)
    else:  # half precision rounds differently along the two paths: compare relative error
        err = ((ours - want).norm() / want.norm()).item()
        assert err < 2e-2, f"outputs differ: relative error {err:.3g}"

    def logits(m: nn.Module) -> torch.Tensor:
        out = m(ids)
        return out if isinstance(out, torch.Tensor) else out.logits

    def forward(m: nn.Module) -> Callable[[], object]:
        def run() -> object:
            m.eval()
            with torch.no_grad():
                out = logits(m)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    def train_step(m: nn.Module) -> Callable[[], object]:
        def run() -> object:
            m.train()
            m.zero_grad(set_to_none=True)
            out = logits(m)
            loss = nn.functional.cross_entropy(
                out.reshape(-1, SIZES["vocab"]).float(), labels.reshape(-1)
            )
            loss.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return loss

        return run

    print(
        f"{n_ours:,} parameters; {SIZES['N']} layers, d_model {SIZES['d_model']}, "
        f"{SIZES['h']} heads / {SIZES['n_kv_heads']} KV heads; batch {B}, length {T}; "
        f"{dev}, {args.dtype}"
    )
    for what, make in (("forward", forward), ("fwd + bwd", train_step)):
        ours_fn, ref_fn = make(model), make(ref)
        for _ in range(2):  # warm up
            ours_fn(), ref_fn()
        mine: list[float] = []
        other: list[float] = []
        for i in range(args.repeat):  # alternate which goes first
            if i % 2:
                mine.append(timed(ours_fn))
                other.append(timed(ref_fn))
            else:
                other.append(timed(ref_fn))
                mine.append(timed(ours_fn))
        o, r = statistics.median(mine), statistics.median(other)
        print(
            f"{what:10}: archcomp {o * 1000:8.1f} ms, transformers {r * 1000:8.1f} ms, "
            f"ratio {o / r:.2f} (goal <= 1.00)"
        )


if __name__ == "__main__":
    main()
