"""Greedy encoder-decoder decoding: archcomp's ``generate`` against transformers', same weights.

    .venv/bin/python benchmarks/bench_generate_encdec.py [--repeat 4] [--rounds 2] [--threads N]

A random T5 (4 + 4 layers, d_model 256, 8 heads of 32, ReLU 1024, vocabulary 32128) and BART
(4 + 4 layers, d_model 256, 8 heads, GELU 1024, vocabulary 32000) are saved by transformers and
loaded by ``archcomp.from_pretrained``; batch 1, (source 64, new 64) and (source 512, new 128),
eager, CPU float32. transformers runs GenerationMixin's greedy ``generate`` with nothing forced
(no eos, no forced tokens) and its default cache (cross-attention keys computed once, as ours).
Tokens are checked equal first; then ABBA timing (tests/bench_generate.py's ``measure``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from bench_generate import measure

import archcomp

SETTINGS = ((64, 64), (512, 128))  # (source, new tokens)
WIDTH = {"d_model": 256, "layers": 4, "heads": 8, "ffn": 1024}


def reference(family: str) -> Any:
    """transformers' random model of the family, eval mode."""
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    d, n, h, f = WIDTH["d_model"], WIDTH["layers"], WIDTH["heads"], WIDTH["ffn"]
    if family == "t5":
        t5 = T5Config(
            vocab_size=32128, d_model=d, d_kv=d // h, num_heads=h, num_layers=n,
            num_decoder_layers=n, d_ff=f, decoder_start_token_id=0,
        )  # fmt: skip
        return T5ForConditionalGeneration(t5).eval()
    bart = BartConfig(
        vocab_size=32000, d_model=d, encoder_layers=n, decoder_layers=n,
        encoder_attention_heads=h, decoder_attention_heads=h, encoder_ffn_dim=f,
        decoder_ffn_dim=f, max_position_embeddings=1024,
    )  # fmt: skip
    return BartForConditionalGeneration(bart).eval()


def sides(ref: Any, ours: Any, src: torch.Tensor, new: int) -> tuple[Any, Any]:
    """(archcomp, transformers) greedy generate of ``new`` tokens from source ``src``."""
    from transformers import GenerationMixin

    c = ref.config
    kw = {
        "max_new_tokens": new,
        "min_new_tokens": new,
        "do_sample": False,
        "num_beams": 1,
        "eos_token_id": None,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
        "pad_token_id": c.pad_token_id,
        "decoder_start_token_id": c.decoder_start_token_id,
    }

    def theirs() -> torch.Tensor:
        with torch.inference_mode():
            return GenerationMixin.generate(ref, input_ids=src, **kw)

    def mine() -> torch.Tensor:
        return ours.generate(input_ids=src, max_new_tokens=new)

    return mine, theirs


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4, help="timed runs per side and setting")
    ap.add_argument("--rounds", type=int, default=2, help="times the whole measurement runs")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device("cpu")
    g = torch.Generator().manual_seed(1)
    for family in ("t5", "bart"):
        ref = reference(family)
        with tempfile.TemporaryDirectory() as tmp:
            ref.save_pretrained(Path(tmp))
            ours = archcomp.from_pretrained(Path(tmp)).eval()
        print(f"{family}: {WIDTH}; batch 1, greedy, cpu float32, {torch.get_num_threads()} threads")
        for rnd in range(args.rounds):
            for source, new in SETTINGS:
                src = torch.randint(3, 32000, (1, source), generator=g)
                mine, theirs = sides(ref, ours, src, new)
                same = torch.equal(mine(), theirs())
                a, b = measure(mine, theirs, args.repeat, device)
                print(
                    f"  round {rnd + 1} source {source:3} new {new:3}: archcomp {new / a:6.1f} "
                    f"tok/s, transformers {new / b:6.1f} tok/s, ratio of times {a / b:.2f}; "
                    f"tokens {'identical' if same else 'DIFFER'}"
                )


if __name__ == "__main__":
    main()
