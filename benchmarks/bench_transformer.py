"""Compiled Transformer vs torch.nn.Transformer, paper base sizes, batch 8, length 64.

    .venv/bin/python benchmarks/bench_transformer.py [--repeat 10] [--device cpu]
    .venv/bin/python benchmarks/bench_transformer.py --device cuda --dtype bfloat16

Both sides have the same shared embedding (scaled by sqrt(d_model)), sinusoidal positions,
causal target mask, dropout 0.1 and tied output projection; the compiled side is the spec
below (torch.nn.Transformer's layout: post-norm, final encoder and decoder norms), with the
reference's weights copied in. Measured alternately in one run (ABBA order, so drift and
cache warmth hit both sides alike): forward (eval, no_grad) and forward + backward (train
mode, cross-entropy; no optimizer update, so both sides keep the same weights). Denormals are
flushed: subnormal values left by different weight inits once swung this comparison by 30%.
Prints the ratio compiled / reference; the goal is <= 1.00 on CPU, and on a GPU in bfloat16.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import archcomp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from numerics import RoundingChains, assert_close  # the tests' tolerance rule

N, D, FF, H, VOCAB, P = 6, 512, 2048, 8, 37000, 0.1
B, S, T = 8, 64, 64

SPEC = f"""\
archcomp: 1
name: transformer_base
params: {{N: {N}, d_model: {D}, d_ff: {FF}, h: {H}, vocab: {VOCAB}, dropout: {P}}}
inputs:
  src: {{shape: [B, S], dtype: int64}}
  tgt: {{shape: [B, T], dtype: int64}}
blocks:
  add_norm:
    params: {{dropout: 0.1}}
    inputs: [x, sublayer]
    nodes:
      - {{id: drop, op: dropout, in: sublayer, p: "${{dropout}}"}}
      - {{id: add, op: add, in: [x, drop]}}
      - {{id: norm, op: layer_norm}}
    outputs: norm
  feed_forward:
    params: {{d_model: 512, d_ff: 2048, dropout: 0.1}}
    inputs: [x]
    nodes:
      - {{id: linear1, op: linear, out_features: "${{d_ff}}"}}
      - {{id: relu, op: relu}}
      - {{id: drop, op: dropout, p: "${{dropout}}"}}
      - {{id: linear2, op: linear, out_features: "${{d_model}}"}}
    outputs: linear2
  encoder_layer:
    params: {{d_model: 512, d_ff: 2048, h: 8, dropout: 0.1}}
    inputs: [x]
    nodes:
      - {{id: self_attn, op: multi_head_attention, num_heads: "${{h}}", dropout: "${{dropout}}"}}
      - {{id: norm1, op: add_norm, in: [x, self_attn], dropout: "${{dropout}}"}}
      - {{id: ff, op: feed_forward, d_model: "${{d_model}}", d_ff: "${{d_ff}}",
         dropout: "${{dropout}}"}}
      - {{id: norm2, op: add_norm, in: [norm1, ff], dropout: "${{dropout}}"}}
    outputs: norm2
  decoder_layer:
    params: {{d_model: 512, d_ff: 2048, h: 8, dropout: 0.1}}
    inputs: [x, memory]
    nodes:
      - {{id: self_attn, op: multi_head_attention, in: x, num_heads: "${{h}}", causal: true,
         dropout: "${{dropout}}"}}
      - {{id: norm1, op: add_norm, in: [x, self_attn], dropout: "${{dropout}}"}}
      - {{id: cross_attn, op: multi_head_attention, in: {{query: norm1, key: memory,
         value: memory}}, num_heads: "${{h}}", dropout: "${{dropout}}"}}
      - {{id: norm2, op: add_norm, in: [norm1, cross_attn], dropout: "${{dropout}}"}}
      - {{id: ff, op: feed_forward, d_model: "${{d_model}}", d_ff: "${{d_ff}}",
         dropout: "${{dropout}}"}}
      - {{id: norm3, op: add_norm, in: [norm2, ff], dropout: "${{dropout}}"}}
    outputs: norm3
nodes:
  - {{id: src_embed, op: embedding, in: src, num_embeddings: "${{vocab}}",
     embedding_dim: "${{d_model}}", scale: true}}
  - {{id: src_pos, op: sinusoidal_positional_encoding}}
  - {{id: src_drop, op: dropout, p: "${{dropout}}"}}
  - {{id: encoder, op: encoder_layer, repeat: "${{N}}", d_model: "${{d_model}}",
     d_ff: "${{d_ff}}", h: "${{h}}", dropout: "${{dropout}}"}}
  - {{id: encoder_norm, op: layer_norm}}
  - {{id: tgt_embed, op: embedding, in: tgt, num_embeddings: "${{vocab}}",
     embedding_dim: "${{d_model}}", scale: true, tie: {{weight: src_embed.weight}}}}
  - {{id: tgt_pos, op: sinusoidal_positional_encoding}}
  - {{id: tgt_drop, op: dropout, p: "${{dropout}}"}}
  - {{id: decoder, op: decoder_layer, repeat: "${{N}}", in: {{x: tgt_drop, memory: encoder_norm}},
     d_model: "${{d_model}}", d_ff: "${{d_ff}}", h: "${{h}}", dropout: "${{dropout}}"}}
  - {{id: decoder_norm, op: layer_norm}}
  - {{id: generator, op: linear, out_features: "${{vocab}}", bias: false,
     tie: {{weight: src_embed.weight}}}}
outputs: {{logits: generator}}
"""


def sinusoids(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    angle = pos / torch.pow(10000.0, torch.arange(0, d, 2, dtype=torch.float32) / d)
    pe = torch.zeros(n, d)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe


class Reference(nn.Module):
    """torch.nn.Transformer with the same embeddings and output projection around it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.register_buffer("pe", sinusoids(5000, D), persistent=False)
        self.drop = nn.Dropout(P)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.transformer = nn.Transformer(D, H, N, N, FF, dropout=P, batch_first=True)
        self.generator = nn.Linear(D, VOCAB, bias=False)
        self.generator.weight = self.embed.weight

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        s = self.drop(self.embed(src) * math.sqrt(D) + self.pe[: src.size(1)])
        t = self.drop(self.embed(tgt) * math.sqrt(D) + self.pe[: tgt.size(1)])
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1), device=tgt.device)
        out = self.transformer(s, t, tgt_mask=mask, tgt_is_causal=True)
        return self.generator(out)


def copy_weights(model: nn.Module, ref: Reference) -> None:
    """The reference's weights into the compiled model (in_proj split into q, k, v)."""
    get = model.get_parameter
    with torch.no_grad():
        get("src_embed.weight").copy_(ref.embed.weight)

        def mha(prefix: str, m: nn.MultiheadAttention) -> None:
            for k, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                get(f"{prefix}.{proj}.weight").copy_(m.in_proj_weight[k * D : (k + 1) * D])
                get(f"{prefix}.{proj}.bias").copy_(m.in_proj_bias[k * D : (k + 1) * D])
            get(f"{prefix}.out_proj.weight").copy_(m.out_proj.weight)
            get(f"{prefix}.out_proj.bias").copy_(m.out_proj.bias)

        def same(prefix: str, m: nn.Module) -> None:
            for name, p in m.named_parameters():
                get(f"{prefix}.{name}").copy_(p)

        tr = ref.transformer
        for i, layer in enumerate(tr.encoder.layers):
            mha(f"encoder.{i}.self_attn", layer.self_attn)
            same(f"encoder.{i}.ff.linear1", layer.linear1)
            same(f"encoder.{i}.ff.linear2", layer.linear2)
            same(f"encoder.{i}.norm1.norm", layer.norm1)
            same(f"encoder.{i}.norm2.norm", layer.norm2)
        same("encoder_norm", tr.encoder.norm)
        for i, layer in enumerate(tr.decoder.layers):
            mha(f"decoder.{i}.self_attn", layer.self_attn)
            mha(f"decoder.{i}.cross_attn", layer.multihead_attn)
            same(f"decoder.{i}.ff.linear1", layer.linear1)
            same(f"decoder.{i}.ff.linear2", layer.linear2)
            for k in (1, 2, 3):
                same(f"decoder.{i}.norm{k}.norm", getattr(layer, f"norm{k}"))
        same("decoder_norm", tr.decoder.norm)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    ref = Reference().to(dev)
    model = archcomp.build(SPEC, device=dev, seed=0)
    copy_weights(model, ref)  # in float32, then both sides are cast alike
    ref.to(dtype), model.to(dtype)
    n_ref = sum(p.numel() for p in ref.parameters())
    n_ours = sum(p.numel() for p in model.parameters())
    assert n_ref == n_ours, (n_ref, n_ours)
    src = torch.randint(0, VOCAB, (B, S), device=dev)
    tgt = torch.randint(0, VOCAB, (B, T), device=dev)
    labels = torch.randint(0, VOCAB, (B, T), device=dev)
    ref.eval(), model.eval()
    with torch.no_grad(), RoundingChains() as chains:  # tests/NUMERICS.md: the same function
        ours, theirs = model(src, tgt), ref(src, tgt)
    assert_close(ours, theirs, chains.tolerance(dtype, ours, theirs), msg="outputs")

    def forward(m: nn.Module) -> Callable[[], object]:
        def run() -> object:
            m.eval()
            with torch.no_grad():
                out = m(src, tgt)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    def train_step(m: nn.Module) -> Callable[[], object]:
        def run() -> object:
            m.train()
            m.zero_grad(set_to_none=True)
            logits = m(src, tgt)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, VOCAB).float(), labels.reshape(-1)
            )
            loss.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return loss

        return run

    print(f"{n_ours:,} parameters; batch {B}, source {S}, target {T}; {dev}, {args.dtype}")
    for what, make in (("forward", forward), ("fwd + bwd", train_step)):
        ours_fn, ref_fn = make(model), make(ref)
        for _ in range(2):  # warm up
            ours_fn(), ref_fn()
        ours: list[float] = []
        theirs: list[float] = []
        for i in range(args.repeat):  # alternate which goes first
            if i % 2:
                ours.append(timed(ours_fn))
                theirs.append(timed(ref_fn))
            else:
                theirs.append(timed(ref_fn))
                ours.append(timed(ours_fn))
        o, r = statistics.median(ours), statistics.median(theirs)
        print(
            f"{what:10}: archcomp {o * 1000:8.1f} ms, nn.Transformer {r * 1000:8.1f} ms, "
            f"ratio {o / r:.2f} (goal <= 1.00)"
        )


if __name__ == "__main__":
    main()
