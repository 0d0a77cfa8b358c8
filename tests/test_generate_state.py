"""Cached decoding of layers whose state is not every head's keys and values of every token:
Mamba's causal convolution and selective scan, latent attention's compressed latent, and
sliding-window layers keeping only their window (docs/generation.md)."""

from __future__ import annotations

from typing import Any

import numerics
import pytest
import torch
from hf_models import FAMILIES
from numerics import RoundingChains

import archcomp
from archcomp.nn.kv_cache import (
    CacheUnsupported,
    ConvState,
    LatentKV,
    LayerKV,
    ScanState,
    WindowKV,
)

MAMBA = {"vocab": 50, "d_model": 32, "N": 2, "d_state": 4, "d_conv": 4, "expand": 2}
MAMBA |= {"dt_rank": 3}


# DeepSeek-V3 with 4 heads of 8 + 6 query/key dims and 10 value dims, a latent of 16
DEEPSEEK = {"vocab": 50, "d_model": 32, "d_ff": 64, "moe_d_ff": 16, "N": 2, "first_k_dense": 1}
DEEPSEEK |= {"h": 4, "q_lora_rank": 12, "kv_lora_rank": 16, "qk_nope_head_dim": 8}
DEEPSEEK |= {"qk_rope_head_dim": 6, "v_head_dim": 10, "experts": 4, "k": 2, "n_group": 2}
DEEPSEEK |= {"topk_group": 1, "n_shared": 1, "context": 32}


def mamba() -> Any:
    return archcomp.build("mamba", params=MAMBA, seed=0, dtype=torch.float64).eval()


def deepseek() -> Any:
    return archcomp.build("deepseek_v3", params=DEEPSEEK, seed=0, dtype=torch.float64).eval()


BUILD = {"mamba": mamba, "deepseek_v3": deepseek}


def stepwise(model: Any, ids: torch.Tensor, prefill: int, **kw: Any) -> torch.Tensor:
    """Logits of ids (B, T): the first ``prefill`` tokens at once, then one at a time."""
    cache = model.new_cache(ids.size(0), ids.size(1), **kw)
    parts = [model.forward_cached(ids[:, :prefill], cache)]
    for t in range(prefill, ids.size(1)):
        parts.append(model.forward_cached(ids[:, t : t + 1], cache))
    return torch.cat(parts, dim=1)


def test_mamba_steps_carry_conv_and_scan_state() -> None:
    """(A static cache: the compiled decode test below.)"""
    model = mamba()
    ids = torch.randint(0, 50, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), RoundingChains() as chains:
        full = model(ids)
        got = stepwise(model, ids, 4)
    numerics.assert_close(got, full, chains.tolerance(torch.float64, got, full))


def test_a_mamba_step_runs_the_new_token_only() -> None:
    """O(1) per token: the scan and the convolution of a step see one position, and the
    cache's memory does not grow with its length."""
    model = mamba()
    ids = torch.randint(0, 50, (1, 9), generator=torch.Generator().manual_seed(2))
    lengths: list[int] = []
    ssm = model.get_submodule("layers.0.mixer.ssm")
    handle = ssm.register_forward_pre_hook(lambda m, args: lengths.append(args[0].size(2)))
    try:
        with torch.no_grad():
            stepwise(model, ids, 5)
    finally:
        handle.remove()
    assert lengths == [5, 1, 1, 1, 1]
    cache = model.new_cache(3, 1000)
    assert cache.nbytes == model.new_cache(3, 2).nbytes
    conv, scan = cache.layers["layers.0.mixer.conv1d"], cache.layers["layers.0.mixer.ssm"]
    assert isinstance(conv, ConvState) and conv.window.shape == (3, 64, 3)  # d_conv - 1 inputs
    assert isinstance(scan, ScanState) and scan.h.shape == (3, 64, 4)  # (B, D, d_state)


def test_a_mamba_cache_reset_forgets_its_state() -> None:
    model = mamba()
    ids = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(3))
    cache = model.new_cache(1, 12)
    with torch.no_grad():
        first = model.forward_cached(ids, cache)
        cache.reset()
        again = model.forward_cached(ids, cache)
    assert torch.equal(first, again)


def test_left_padded_mamba_rows_decode_as_they_do_alone() -> None:
    """Padding is tuned out of the convolution and the scan (transformers' Mamba does so)."""
    model = mamba()
    g = torch.Generator().manual_seed(4)
    short = torch.randint(1, 50, (1, 3), generator=g)
    long = torch.randint(1, 50, (1, 6), generator=g)
    batch = torch.cat([torch.cat([torch.full((1, 3), 7), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    cache = model.new_cache(2, 10)
    with torch.no_grad(), RoundingChains() as chains:
        together = model.forward_cached(batch, cache, mask)[0, 3:]
        alone = model(short)[0]
    numerics.assert_close(together, alone, chains.tolerance(torch.float64, together, alone))
    out = model.generate(batch, 6, attention_mask=mask)
    assert torch.equal(out[0, 3:], model.generate(short, 6)[0])
    assert torch.equal(out[1], model.generate(long, 6)[0])


@pytest.mark.parametrize("static", [False, True], ids=["eager", "static"])
def test_latent_attention_steps_equal_the_full_forward(static: bool) -> None:
    """A prompt (keys and values expanded), a chunk of 3 and single tokens (absorbed)."""
    model = deepseek()
    ids = torch.randint(0, 50, (2, 11), generator=torch.Generator().manual_seed(6))
    cache = model.new_cache(2, 11, static=static)
    with torch.no_grad(), RoundingChains() as chains:
        full = model(ids)
        parts = [model.forward_cached(ids[:, :4], cache), model.forward_cached(ids[:, 4:7], cache)]
        parts += [model.forward_cached(ids[:, t : t + 1], cache) for t in range(7, 11)]
        got = torch.cat(parts, dim=1)
    numerics.assert_close(got, full, chains.tolerance(torch.float64, got, full))


def test_latent_attention_caches_its_compressed_latent() -> None:
    """Per token and layer kv_lora_rank + qk_rope_head_dim numbers (16 + 6), not every head's
    keys and values (4 x (14 + 10))."""
    cache = deepseek().new_cache(3, 20)
    entry = cache.layers["layers.0.self_attn"]
    assert isinstance(entry, LatentKV)
    assert entry.latent.shape == (3, 20, 16) and entry.rope_key.shape == (3, 20, 6)
    assert cache.nbytes == 2 * 3 * 20 * (16 + 6) * 8  # layers x B x L x numbers x bytes


def test_left_padded_latent_attention_rows_decode_as_they_do_alone() -> None:
    model = deepseek()
    g = torch.Generator().manual_seed(7)
    short = torch.randint(1, 50, (1, 3), generator=g)
    long = torch.randint(1, 50, (1, 6), generator=g)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    out = model.generate(batch, 6, attention_mask=mask)
    assert torch.equal(out[0, 3:], model.generate(short, 6)[0])
    assert torch.equal(out[1], model.generate(long, 6)[0])


@pytest.mark.parametrize("name", ["mamba", "deepseek_v3"])
def test_compiled_decode_is_compiled_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._dynamo.utils import counters

    from archcomp.backends.torch import generate as gen

    monkeypatch.setitem(gen.COMPILE_OPTIONS, "backend", "eager")
    monkeypatch.setitem(gen.PREFILL_OPTIONS, "backend", "eager")
    monkeypatch.setitem(gen.SCAN_PREFILL_OPTIONS, "backend", "eager")
    torch._dynamo.reset()
    counters.clear()
    model = BUILD[name]()
    ids = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(5))
    want = model.generate(ids, 9)
    assert torch.equal(model.generate(ids, 9, compile=True), want)
    assert torch.equal(model.generate(ids, 6, compile=True), want[:, :11])
    longer = torch.cat([ids, ids[:, :2]], 1)  # another prompt length: the same prefill graph
    assert torch.equal(model.generate(longer, 4, compile=True), model.generate(longer, 4))
    # the one-token step and the prefill; Mamba's prefill (a scan over the prompt) has a
    # graph per prompt length: one more for the longer prompt (none per token)
    assert counters["stats"]["unique_graphs"] == (3 if name == "mamba" else 2)
    assert not counters["graph_break"]
    assert not counters["recompiles"]


def mistral(window: int) -> Any:
    params = {"N": 2, "d_model": 32, "h": 4, "n_kv_heads": 2, "d_ff": 48, "vocab": 61}
    params |= {"context": 32, "window": window}
    return archcomp.build("mistral", params=params, seed=0, dtype=torch.float64).eval()


def test_sliding_window_layers_keep_only_their_window() -> None:
    """Gemma 2 (window 4): local layers a ring of 4 positions, global layers the whole length;
    a window as long as the cache keeps the whole length."""
    model = archcomp.build(
        "gemma2", params=FAMILIES["gemma2"].params, seed=0, dtype=torch.float64
    ).eval()
    cache = model.new_cache(2, 16)
    local, full = cache.layers["layers.0.self_attn"], cache.layers["layers.1.self_attn"]
    assert isinstance(local, WindowKV) and local.k.shape == (2, 2, 4, 12)  # (B, h_kv, window, d)
    assert type(full) is LayerKV and full.k.shape == (2, 2, 16, 12)
    # (k, v) x B x h_kv x d x 8 bytes x (two local layers of 4 positions, one global of 16)
    assert cache.nbytes == 2 * 2 * 2 * 12 * 8 * (2 * 4 + 16)
    assert type(mistral(8).new_cache(1, 8).layers["layers.0.self_attn"]) is LayerKV


@pytest.mark.parametrize(("prefill", "static"), [(2, True), (7, False)], ids=["short", "long"])
def test_ring_layers_steps_equal_the_full_forward(prefill: int, static: bool) -> None:
    """Prompts shorter and longer than the window (4), decoded past twice its length."""
    model = mistral(4)
    ids = torch.randint(0, 61, (2, 12), generator=torch.Generator().manual_seed(8))
    with torch.no_grad(), RoundingChains() as chains:
        full = model(ids)
        got = stepwise(model, ids, prefill, static=static)
    numerics.assert_close(got, full, chains.tolerance(torch.float64, got, full))


def test_gemma2_local_and_global_layers_decode_through_rings() -> None:
    """In float32: Gemma 2's softcapped attention takes its softmax in float32, whose sum the
    ring's slot order (not the positions' order) rounds otherwise than the whole sequence."""
    model = archcomp.build("gemma2", params=FAMILIES["gemma2"].params, seed=0).eval()
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(8))
    with torch.no_grad(), RoundingChains() as chains:
        full = model(ids)
        got = stepwise(model, ids, 7)
    numerics.assert_close(got, full, chains.tolerance(torch.float32, got, full))


def test_left_padded_rows_decode_as_they_do_alone_through_a_ring() -> None:
    model = mistral(3)
    g = torch.Generator().manual_seed(9)
    short = torch.randint(1, 61, (1, 4), generator=g)
    long = torch.randint(1, 61, (1, 7), generator=g)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    out = model.generate(batch, 6, attention_mask=mask)
    assert isinstance(model.new_cache(2, 13).layers["layers.0.self_attn"], WindowKV)
    assert torch.equal(out[0, 3:], model.generate(short, 6)[0])
    assert torch.equal(out[1], model.generate(long, 6)[0])


CONV = """
archcomp: 1
name: conv_lm
inputs:
  ids: {shape: [B, T], dtype: int64}
nodes:
  - {id: embed, op: embedding, num_embeddings: 61, embedding_dim: 8}
  - {id: first, op: transpose, dim0: 1, dim1: 2}
  - {id: conv, op: conv1d, out_channels: 8, kernel_size: 3, padding: 1}
  - {id: last, op: transpose, dim0: 1, dim1: 2}
  - {id: head, op: linear, out_features: 61}
outputs: {logits: head}
"""


def test_a_convolution_that_is_not_causal_is_refused_with_its_name() -> None:
    model = archcomp.build(CONV, seed=0)
    with pytest.raises(CacheUnsupported, match=r"^conv: a convolution along the sequence"):
        model.new_cache(1, 8)
