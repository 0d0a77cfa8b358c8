"""KV-cached decoding and generate: logits of prefill + one-token steps equal the whole
sequence's forward, and greedy tokens equal transformers' ``generate`` on random checkpoints of
every decoder family (docs/generation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numerics
import pytest
import torch
from hf_models import FAMILIES, Family, save
from numerics import RoundingChains

import archcomp
from archcomp.nn.kv_cache import CacheUnsupported

TINY = {
    "llama": {"N": 2, "d_model": 32, "h": 4, "n_kv_heads": 2, "d_ff": 48, "vocab": 61},
    "mistral": {"N": 2, "d_model": 32, "h": 4, "n_kv_heads": 2, "d_ff": 48, "vocab": 61},
    "gpt2": {"N": 2, "d_model": 32, "h": 4, "vocab": 61},
}


def tiny(name: str, **extra: Any) -> Any:
    params = {**TINY[name], "context": 32, **extra}
    return archcomp.build(name, params=params, seed=0, dtype=torch.float64).eval()


def stepwise(model: Any, ids: torch.Tensor, prefill: int, static: bool) -> torch.Tensor:
    """Logits of ids (B, T): the first ``prefill`` tokens at once, then one at a time."""
    cache = model.new_cache(ids.size(0), ids.size(1), static=static)
    parts = [model.forward_cached(ids[:, :prefill], cache)]
    for t in range(prefill, ids.size(1)):
        parts.append(model.forward_cached(ids[:, t : t + 1], cache))
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("name", ["llama", "mistral", "gpt2"])
@pytest.mark.parametrize("static", [False, True], ids=["eager", "static"])
def test_cached_steps_equal_the_full_forward(name: str, static: bool) -> None:
    extra = {"window": 3} if name == "mistral" else {}  # the window shorter than the sequence
    model = tiny(name, **extra)
    ids = torch.randint(0, 61, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), RoundingChains() as chains:
        full = model(ids)
        got = stepwise(model, ids, 4, static)
    numerics.assert_close(got, full, chains.tolerance(torch.float64, got, full))


def test_the_cache_stores_key_value_heads_only() -> None:
    model = tiny("llama")  # 4 query heads, 2 key/value heads, head dim 8
    cache = model.new_cache(3, 20)
    k = cache.layers["layers.0.self_attn"].k
    assert k.shape == (3, 2, 20, 8) and k.dtype == torch.float64
    assert cache.nbytes == 2 * 2 * (3 * 2 * 20 * 8) * 8  # layers x (k, v) x elements x bytes
    cache.reset()
    assert cache.length == 0


def test_a_cache_longer_than_the_position_table_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds the model's position table"):
        tiny("gpt2").new_cache(1, 33)


def test_an_encoder_decoder_is_refused_with_the_layer_named() -> None:
    params = {"N": 1, "d_model": 16, "d_ff": 32, "h": 2, "vocab": 20}
    model = archcomp.build("transformer", params=params, seed=0)
    with pytest.raises(ValueError, match="one input"):
        model.new_cache(1, 8)


def test_left_padded_rows_decode_as_they_do_alone() -> None:
    model = tiny("llama")
    g = torch.Generator().manual_seed(2)
    short = torch.randint(1, 61, (1, 3), generator=g)
    long = torch.randint(1, 61, (1, 6), generator=g)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    together = model.generate(batch, 5, attention_mask=mask)
    alone = model.generate(short, 5)
    assert torch.equal(together[0, 3:], alone[0])
    assert torch.equal(together[1], model.generate(long, 5)[0])


def _decoder_families() -> list[Any]:
    return [pytest.param(name, id=name) for name in sorted(FAMILIES)]


def _archcomp_decoder(family: Family, folder: Path, dtype: torch.dtype) -> Any:
    """The family's archcomp model, or a skip saying why it has no cached decoding."""
    model = archcomp.from_pretrained(folder, dtype=dtype)
    if "logits" not in model.output_names and len(model.output_names) != 1:
        pytest.skip(f"{family.name} has no logits output")
    try:
        model.new_cache(1, 2)
    except CacheUnsupported as e:
        pytest.skip(f"{family.name}: cached decoding not implemented: {e}")
    except ValueError as e:
        pytest.skip(f"{family.name}: not a decoder: {e}")
    return model


def _widest(hf: Any) -> torch.dtype:
    """float64 (no near-ties between logits), or float32 where the transformers model has no
    float64 kernels (Mixtral's grouped matmul); ``hf`` is left in that dtype."""
    hf.double()
    try:
        with torch.no_grad():
            hf(torch.ones(1, 2, dtype=torch.int64))
    except RuntimeError:
        hf.float()
        return torch.float32
    return torch.float64


@pytest.mark.parametrize("name", _decoder_families())
def test_greedy_tokens_equal_transformers_generate(name: str, tmp_path: Path) -> None:
    family = FAMILIES[name]
    inputs = family.inputs(torch.Generator().manual_seed(0))
    if len(inputs) != 1 or next(iter(inputs.values())).dtype != torch.int64:
        pytest.skip(f"{family.name} is not a decoder of token ids (inputs {list(inputs)})")
    hf = save(family, tmp_path)
    dtype = _widest(hf)
    model = _archcomp_decoder(family, tmp_path, dtype)
    vocab = hf.config.vocab_size
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, vocab, (2, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # the first row is left-padded
    ids[0, :2] = 0
    eos = hf.generation_config.eos_token_id  # both sides stop rows at the family's eos
    kw = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        want = hf.generate(ids, attention_mask=mask, **kw)
    got = model.generate(ids, 8, attention_mask=mask, eos_token_id=eos, pad_token_id=0)
    if torch.equal(got, want):
        return
    # transformers may decode a left-padded row otherwise than that row alone (Gemma 2's sliding
    # window over padding); a padded row must decode as it does alone, which is then the reference
    with torch.no_grad():
        alone = hf.generate(ids[:1, 2:], **kw)[0]  # shorter when it stops at eos
    assert torch.equal(got[1], want[1]), f"archcomp {got.tolist()} != transformers {want.tolist()}"
    assert torch.equal(got[0, 2 : 2 + alone.numel()], alone), f"{got[0]} != {alone} alone"
    assert (got[0, 2 + alone.numel() :] == 0).all()


def test_sampling_with_a_seed_is_reproducible() -> None:
    model = tiny("gpt2")
    ids = torch.randint(0, 61, (2, 4), generator=torch.Generator().manual_seed(4))
    kw = {"do_sample": True, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "seed": 7}
    a, b = model.generate(ids, 10, **kw), model.generate(ids, 10, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, model.generate(ids, 10, **{**kw, "seed": 8}))


def test_eos_stops_a_row_and_pads_it() -> None:
    model = tiny("gpt2")
    ids = torch.randint(0, 61, (1, 4), generator=torch.Generator().manual_seed(5))
    free = model.generate(ids, 6)
    eos = int(free[0, 5])  # the second new token, or the first when they are the same
    end = 5 if int(free[0, 4]) != eos else 4
    stopped = model.generate(ids, 6, eos_token_id=eos)
    assert torch.equal(stopped, free[:, : end + 1])
    two = model.generate(torch.cat([ids, ids.flip(1)]), 6, eos_token_id=eos)
    assert torch.equal(two[0, : end + 1], free[0, : end + 1])
    assert (two[0, end + 1 :] == eos).all()  # a finished row is padded (pad = eos)


def test_callback_gets_every_new_token() -> None:
    model = tiny("gpt2")
    ids = torch.randint(0, 61, (1, 4), generator=torch.Generator().manual_seed(6))
    seen: list[int] = []
    out = model.generate(ids, 5, callback=lambda t: seen.append(int(t[0])))
    assert seen == out[0, 4:].tolist()


def test_a_large_head_is_read_column_major_while_generating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The logits layer's weight is column-major during generate (the same tokens), and the
    model's own tensor is back after it, also when a step raises."""
    from archcomp.backends.torch import generate as gen

    model = tiny("llama")
    head = model.get_submodule("lm_head")
    before = head.weight.data_ptr()
    ids = torch.randint(0, 61, (2, 5), generator=torch.Generator().manual_seed(9))
    want = model.generate(ids, 6)
    monkeypatch.setattr(gen, "COLUMN_MAJOR_HEAD", 0)
    strides: list[tuple[int, ...]] = []
    got = model.generate(ids, 6, callback=lambda t: strides.append(head.weight.stride()))
    assert torch.equal(got, want)
    assert set(strides) == {(1, 61)}  # (V, d) read as the transpose of a contiguous (d, V)
    assert head.weight.data_ptr() == before and head.weight.is_contiguous()

    def fail(tokens: torch.Tensor) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.generate(ids, 6, callback=fail)
    assert head.weight.data_ptr() == before


def test_compiled_prefill_and_steps_equal_the_full_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled prefill's last logits and each compiled step's equal the whole sequence's
    forward (a wrong position or mask in the graph shows here, where greedy tokens of a tiny
    model may not change)."""
    from archcomp.backends.torch import generate as gen

    monkeypatch.setitem(gen.COMPILE_OPTIONS, "backend", "eager")
    monkeypatch.setitem(gen.PREFILL_OPTIONS, "backend", "eager")
    torch._dynamo.reset()
    model = tiny("mistral", window=3)
    ids = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(3))
    cache = model.new_cache(2, 9, static=True)
    compiled = gen._compiled(model, cache)
    with torch.no_grad(), RoundingChains() as chains:  # the eager path's rounding chains
        full = model(ids)[:, 3:]  # (B, 6, V)
        eager = stepwise(model, ids, 4, static=True)[:, 3:]
    with torch.no_grad():  # compiled code runs outside the counting mode
        got = [gen._prefill(model, ids[:, :4], cache, None, None, compiled)]
        step = gen._stepper(model, cache, compiled)
        with cache.bound(model):
            got += [step(ids[:, t : t + 1]) for t in range(4, 9)]
    numerics.assert_close(torch.stack(got, 1), full, chains.tolerance(torch.float64, eager, full))


def test_compiled_decode_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """generate(compile=True): one graph for the one-token step and one for the prefill (its
    prompt length symbolic), no break, no recompilation per token, for a second call nor for
    another prompt length. Dynamo's capture is what is counted; the eager backend keeps
    it cheap (inductor's code generation is what the benchmark runs)."""
    from torch._dynamo.utils import counters

    from archcomp.backends.torch import generate as gen

    monkeypatch.setitem(gen.COMPILE_OPTIONS, "backend", "eager")
    monkeypatch.setitem(gen.PREFILL_OPTIONS, "backend", "eager")
    monkeypatch.setattr(gen, "COLUMN_MAJOR_HEAD", 0)  # the head column-major, as a real one
    torch._dynamo.reset()
    counters.clear()
    model = tiny("mistral", window=3)  # sliding-window masks too
    ids = torch.randint(0, 61, (2, 5), generator=torch.Generator().manual_seed(8))
    want = model.generate(ids, 9)
    assert torch.equal(model.generate(ids, 9, compile=True), want)
    assert torch.equal(model.generate(ids, 6, compile=True), want[:, :11])
    longer = torch.cat([ids, ids[:, :2]], 1)  # another prompt length: the same prefill graph
    assert torch.equal(model.generate(longer, 4, compile=True), model.generate(longer, 4))
    assert counters["stats"]["unique_graphs"] == 2  # the one-token step and the prefill
    assert not counters["graph_break"]
    assert not counters["recompiles"]


def test_a_prefill_of_the_last_position_gives_its_logits() -> None:
    model = tiny("gpt2")
    ids = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(9))
    with torch.no_grad(), RoundingChains() as chains:
        full = model(ids)[:, -1:]
        last = model.forward_cached(ids, model.new_cache(2, 7), last_only=True)
    assert last.shape == (2, 1, 61)
    numerics.assert_close(last, full, chains.tolerance(torch.float64, last, full))


SINUSOIDAL = """
archcomp: 1
name: tiny_sinusoidal_lm
imports: [{library: gpt, blocks: [gpt_block]}]
inputs:
  ids: {shape: [B, T], dtype: int64}
nodes:
  - {id: embed, op: embedding, num_embeddings: 61, embedding_dim: 32}
  - {id: pos, op: sinusoidal_positional_encoding, max_len: 32}
  - {id: h_, op: gpt_block, repeat: 2, d_model: 32, h: 4, dropout: 0.0}
  - {id: head, op: linear, out_features: 61}
outputs: {logits: head}
"""


def test_sinusoidal_positions_take_the_cache_offsets() -> None:
    model = archcomp.build(SINUSOIDAL, seed=0, dtype=torch.float64).eval()
    ids = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(10))
    with torch.no_grad(), RoundingChains() as chains:
        full = model(ids)
        got = stepwise(model, ids, 3, static=False)
    numerics.assert_close(got, full, chains.tolerance(torch.float64, got, full))


CROSS = """
archcomp: 1
name: masked_lm
inputs:
  ids: {shape: [B, T], dtype: int64}
nodes:
  - {id: embed, op: embedding, num_embeddings: 61, embedding_dim: 32}
  - {id: other, op: linear, out_features: 32}
  - {id: attn, op: multi_head_attention, num_heads: 4, causal: true,
     in: {query: embed, key: other, value: other}}
  - {id: head, op: linear, out_features: 61}
outputs: {logits: head}
"""


def test_attention_to_other_keys_is_refused_with_its_node() -> None:
    model = archcomp.build(CROSS, seed=0)
    with pytest.raises(CacheUnsupported, match=r"^attn: attention with other keys"):
        model.new_cache(1, 8)
