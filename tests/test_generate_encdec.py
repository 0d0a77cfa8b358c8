"""Encoder-decoder generation (T5 v1.0 and v1.1, BART, Whisper; docs/generation.md): the
encoder runs once per prompt, cross-attention's keys and values are projected once and kept in
the cache, the decoder's self-attention is cached as a decoder's (T5's relative bias at the
cache's positions); cached steps equal the whole forward, and greedy tokens equal transformers'
``generate`` on random checkpoints, a batch of two with a padded source."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numerics
import pytest
import torch
from hf_models import quiet
from hf_zoo_encdec import _PARAMS, FAMILIES, VARIANTS, make
from numerics import RoundingChains

import archcomp
from archcomp.nn.kv_cache import CacheUnsupported

pytest.importorskip("transformers")

# (family, variant of tests/hf_zoo_encdec.py)
CASES = [
    pytest.param("t5", "v1_0", id="t5-v1_0"),
    pytest.param("t5", "v1_1", id="t5-v1_1"),
    pytest.param("bart", "large", id="bart"),
    pytest.param("whisper", "large_v3", id="whisper"),
]


def _source(name: str, seed: int) -> dict[str, torch.Tensor]:
    """The family's encoder inputs, a batch of 2 (T5, BART: the second source padded)."""
    x = FAMILIES[name].inputs(torch.Generator().manual_seed(seed))
    x.pop("decoder_input_ids")
    return {k: v.double() if v.is_floating_point() else v for k, v in x.items()}


def _pair(name: str, variant: str, folder: Path) -> tuple[Any, Any]:
    """(transformers' model, archcomp's from its checkpoint), both float64, eval mode."""
    quiet()
    hf = make(name, **VARIANTS[name][variant])
    if name == "t5":  # as the hub's T5 configs have it (transformers 5's T5Config has no default)
        hf.config.decoder_start_token_id = hf.config.pad_token_id
    hf.save_pretrained(folder)
    return hf.double().eval(), archcomp.from_pretrained(folder, dtype=torch.float64)


def _hf_greedy(hf: Any, x: dict[str, torch.Tensor], n: int) -> Any:
    """transformers' greedy ``generate`` with each step's logits, nothing forced or
    suppressed. Whisper's own generate (language, task and timestamp tokens, long-form audio)
    is bypassed: GenerationMixin's, which T5 and BART use too, starts from the
    decoder_start_token_id as ours does."""
    from transformers import GenerationMixin

    c = hf.config
    kw = {
        "max_new_tokens": n,
        "do_sample": False,
        "num_beams": 1,
        "eos_token_id": c.eos_token_id,
        "pad_token_id": c.pad_token_id,
        "decoder_start_token_id": c.decoder_start_token_id,  # T5: written by _pair
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
        "suppress_tokens": None,
        "begin_suppress_tokens": None,
        "output_logits": True,
        "return_dict_in_generate": True,
    }
    with torch.no_grad():
        return GenerationMixin.generate(hf, **x, **kw)


def _stepped(model: Any, x: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Our logits (B, n, V) of each step that produced ids[:, 1:] (the start token first, then
    one token at a time through the cache), as transformers' ``output_logits``."""
    cache = model.new_cache(ids.size(0), ids.size(1))
    with torch.no_grad():
        steps = [model.forward_cached(ids[:, :1], cache, encoder_inputs=x)]
        steps += [model.forward_cached(ids[:, t : t + 1], cache) for t in range(1, ids.size(1) - 1)]
    return torch.cat(steps, dim=1)


def _built(name: str, **params: Any) -> Any:
    """The family's small spec model (tests/hf_zoo_encdec.py's params, dropout off), float64,
    with a decoder start token as from_pretrained sets it."""
    params = {**{k: 0.0 if "dropout" in k else v for k, v in _PARAMS[name].items()}, **params}
    model = archcomp.build(name, params=params, seed=0, dtype=torch.float64).eval()
    model.decoder_start_token_id = 0
    return model


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_greedy_tokens_equal_transformers_generate(name: str, variant: str, tmp_path: Path) -> None:
    """Tokens equal, and so is every step's logits (random small models soon repeat one
    token: the logits are what shows each cached step right)."""
    hf, model = _pair(name, variant, tmp_path)
    assert model.decoder_start_token_id == hf.config.decoder_start_token_id  # from config.json
    x = _source(name, 3)
    c = hf.config
    with RoundingChains() as chains:
        out = _hf_greedy(hf, x, 10)
        got = model.generate(
            **x, max_new_tokens=10, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id
        )
        logits, want_logits = _stepped(model, x, out.sequences), torch.stack(out.logits, 1)
    want = out.sequences
    assert torch.equal(got, want), f"archcomp {got.tolist()} != transformers {want.tolist()}"
    logits = logits.float()  # transformers keeps each step's logits in float32
    numerics.assert_close(logits, want_logits, chains.tolerance(torch.float32, logits, want_logits))
    # a padded source decodes as it does alone (the second row's source is padded)
    if "attention_mask" in x:
        real = int(x["attention_mask"][1].sum())
        alone = {k: v[1:, :real] for k, v in x.items()}
        one = model.generate(**alone, max_new_tokens=10, eos_token_id=c.eos_token_id)
        assert torch.equal(got[1, : one.size(1)], one[0])


@pytest.mark.parametrize("name", ["t5", "bart", "whisper"])
def test_cached_steps_equal_the_full_forward(name: str) -> None:
    """A prefill of 4 decoder tokens and 5 one-token steps, eager and static cache, give the
    whole forward's logits (dropout off: the specs' params of tests/hf_zoo_encdec.py)."""
    model = _built(name)
    x = _source(name, 4)
    ids = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), RoundingChains() as chains:
        full = model(**x, decoder_input_ids=ids)
        for static in (False, True):
            cache = model.new_cache(2, 12, static=static)
            parts = [model.forward_cached(ids[:, :4], cache, encoder_inputs=x)]
            parts += [model.forward_cached(ids[:, t : t + 1], cache) for t in range(4, 9)]
            got = torch.cat(parts, dim=1)
            tol = chains.tolerance(torch.float64, got, full)
            numerics.assert_close(got, full, tol, msg=f"static={static}")


def _counting(module: torch.nn.Module) -> list[int]:
    """A list that grows by one at each call of ``module``."""
    calls: list[int] = []
    module.register_forward_hook(lambda m, args, out: calls.append(1))
    return calls


def test_the_encoder_and_cross_attention_keys_run_once_per_prompt() -> None:
    model = _built("t5")
    encoder = _counting(model.encoder)
    cross = model.decoder.block[1].layer_1.EncDecAttention
    keys, queries = _counting(cross.k_proj), _counting(cross.q_proj)
    out = model.generate(**_source("t5", 6), max_new_tokens=6)
    assert out.shape == (2, 7)
    assert (len(encoder), len(keys), len(queries)) == (1, 1, 6)
    cache = model.new_cache(2, 8)
    with torch.no_grad():
        model.forward_cached(out[:, :1], cache, encoder_inputs=_source("t5", 6))
    assert cache.cross["decoder.block.1.layer_1.EncDecAttention"].k.shape == (2, 4, 9, 12)
    assert set(cache.layers) == {f"decoder.block.{i}.layer_0.SelfAttention" for i in (0, 1)}


def test_sampling_with_a_seed_is_reproducible() -> None:
    model = _built("bart")
    x = _source("bart", 7)
    kw = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5, "top_k": 30, "seed": 3}
    a, b = model.generate(**x, **kw), model.generate(**x, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, model.generate(**x, **{**kw, "seed": 4}))


@pytest.mark.parametrize("name", ["t5", "whisper"])
def test_compiled_decode_is_compiled_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """generate(compile=True) of an encoder-decoder: one graph for the encoder (the prefill's
    bulk) and one for the one-token step (the cross-attention's stored keys read, not
    recomputed), no break, no recompilation for another prompt."""
    from torch._dynamo.utils import counters

    from archcomp.backends.torch import generate as gen

    monkeypatch.setitem(gen.COMPILE_OPTIONS, "backend", "eager")
    monkeypatch.setitem(gen.PREFILL_OPTIONS, "backend", "eager")
    torch._dynamo.reset()
    counters.clear()
    extra = {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
    model = _built(name, **(extra if name == "t5" else {}))
    x = _source(name, 8)
    want = model.generate(**x, max_new_tokens=7)
    assert torch.equal(model.generate(**x, max_new_tokens=7, compile=True), want)
    other = _source(name, 9)  # another prompt of the same shapes: the same graphs
    assert torch.equal(
        model.generate(**other, max_new_tokens=5, compile=True),
        model.generate(**other, max_new_tokens=5),
    )
    assert counters["stats"]["unique_graphs"] == 2  # the encoder and the one-token step
    assert not counters["graph_break"]
    assert not counters["recompiles"]


def test_bad_calls_are_refused_with_what_is_wrong() -> None:
    model = _built("whisper")
    x = _source("whisper", 10)
    with pytest.raises(TypeError, match=r"encoder takes \['input_features'\], not \['input_ids'\]"):
        model.generate(torch.ones(2, 3, dtype=torch.int64), 4)
    with pytest.raises(TypeError, match="needs its encoder inputs"):
        model.generate(max_new_tokens=4)
    with pytest.raises(ValueError, match="needs encoder_inputs"):
        model.forward_cached(torch.zeros(2, 1, dtype=torch.int64), model.new_cache(2, 4))
    model.decoder_start_token_id = None
    with pytest.raises(ValueError, match="needs decoder_start_token_id"):
        model.generate(**x, max_new_tokens=4)
    start = torch.full((2, 1), 0)
    assert model.generate(**x, max_new_tokens=4, decoder_input_ids=start).shape == (2, 5)


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_left_padded_decoder_prompts_decode_as_they_do_alone(name: str, tmp_path: Path) -> None:
    """decoder_input_ids of different lengths, left-padded (decoder_attention_mask 0 there):
    each row decodes as it does alone. T5 (relative positions) equals transformers' generate
    given the same decoder_attention_mask; BART's learned positions start at a row's first
    real token here, where transformers starts them at the padding (its padded row differs
    from the row alone), so the row alone is the reference."""
    hf, model = _pair(name, "v1_0" if name == "t5" else "large", tmp_path)
    x = _source(name, 5)
    start, g = hf.config.decoder_start_token_id, torch.Generator().manual_seed(6)
    ids = torch.randint(3, hf.config.vocab_size, (2, 4), generator=g)
    ids[:, 0] = start
    ids[1, :2] = hf.config.pad_token_id  # the second row: 2 tokens, left-padded
    ids[1, 2] = start
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    got = model.generate(**x, max_new_tokens=6, decoder_input_ids=ids, decoder_attention_mask=mask)
    assert got.shape == (2, 10)
    for row, first in ((0, 0), (1, 2)):
        one = {k: v[row : row + 1] for k, v in x.items()}
        alone = model.generate(
            **one, max_new_tokens=6, decoder_input_ids=ids[row : row + 1, first:]
        )
        assert torch.equal(got[row, first:], alone[0]), f"row {row}: {got[row]} != {alone[0]}"
    if name == "t5":
        from transformers import GenerationMixin

        kw = {"max_new_tokens": 6, "do_sample": False, "decoder_start_token_id": start}
        kw |= {"min_new_tokens": 6, "pad_token_id": 0}  # no eos: every row runs 6 tokens
        with torch.no_grad():
            want = GenerationMixin.generate(
                hf, **x, decoder_input_ids=ids, decoder_attention_mask=mask, **kw
            )
        assert torch.equal(got, want), f"archcomp {got.tolist()} != transformers {want.tolist()}"
    with pytest.raises(ValueError, match="must have decoder_input_ids' shape"):
        model.generate(
            **x, max_new_tokens=2, decoder_input_ids=ids, decoder_attention_mask=mask[:, 1:]
        )


def _whisper_with_rules(folder: Path, rules: dict[str, Any]) -> tuple[Any, Any]:
    """(transformers' Whisper, archcomp's from its checkpoint) with ``rules`` in the
    generation_config.json, both float64."""
    quiet()
    hf = make("whisper")
    hf.generation_config.decoder_start_token_id = hf.config.decoder_start_token_id
    for key, value in rules.items():
        setattr(hf.generation_config, key, value)
    hf.save_pretrained(folder)
    return hf.double(), archcomp.from_pretrained(folder, dtype=torch.float64)


def test_whisper_rules_from_generation_config_equal_transformers(tmp_path: Path) -> None:
    """forced_decoder_ids (the decoder prompt after the start), suppress_tokens (never) and
    begin_suppress_tokens (not first) from generation_config.json: the new tokens equal
    transformers' Whisper generate (which returns the new tokens alone); the rules are chosen
    to ban what the model picks without them, so each one changes the output."""
    x = _source("whisper", 3)
    forced = [[1, 7], [2, 9]]
    hf, model = _whisper_with_rules(tmp_path / "free", {"forced_decoder_ids": forced})
    eos = hf.config.eos_token_id
    free = model.generate(**x, max_new_tokens=6, eos_token_id=eos)
    assert free[:, :3].tolist() == [[0, 7, 9]] * 2  # the start, then the forced ids
    first = int(free[0, 3])  # what begin_suppress_tokens bans; suppress_tokens the next best
    later = int(model.generate(**x, max_new_tokens=1, suppress_tokens=[first])[0, 3])
    rules = {"forced_decoder_ids": forced, "suppress_tokens": [later, 5]}
    rules["begin_suppress_tokens"] = [first, 11]
    hf, model = _whisper_with_rules(tmp_path / "rules", rules)
    assert model.generation_rules == rules
    assert pickle.loads(pickle.dumps(model)).generation_rules == rules
    got = model.generate(**x, max_new_tokens=6, eos_token_id=eos)
    with torch.no_grad():
        want = hf.generate(**x, max_new_tokens=6)
    assert torch.equal(got[:, 3:], want), f"archcomp {got.tolist()} != transformers {want}"
    assert not torch.equal(got, free)
    assert (got[:, 3:] != later).all() and (got[:, 3] != first).all()
    assert (got[:, 4:] == first).any()  # banned first only (and the model would pick it)
    off = {"suppress_tokens": [], "begin_suppress_tokens": [], "forced_decoder_ids": []}
    assert model.generate(**x, max_new_tokens=6, eos_token_id=eos, **off).size(1) == 7


def test_bad_whisper_rules_are_refused_with_the_file_and_key(tmp_path: Path) -> None:
    from archcomp.checkpoints.files import CheckpointFileError

    _, model = _whisper_with_rules(tmp_path / "open", {"forced_decoder_ids": [[1, None], [2, 9]]})
    with pytest.raises(ValueError, match="leaves the language open"):
        model.generate(**_source("whisper", 3), max_new_tokens=2)
    _whisper_with_rules(tmp_path / "bad", {})
    config = tmp_path / "bad" / "generation_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "suppress_tokens": ["a"]}))
    with pytest.raises(CheckpointFileError, match=r"generation_config\.json: suppress_tokens must"):
        archcomp.from_pretrained(tmp_path / "bad")


BIDIRECTIONAL_DECODER = """
archcomp: 1
name: bidirectional_decoder
inputs:
  src: {shape: [B, S], dtype: int64}
  decoder_input_ids: {shape: [B, T], dtype: int64}
nodes:
  - {id: enc, op: embedding, in: src, num_embeddings: 61, embedding_dim: 32}
  - {id: dec, op: embedding, in: decoder_input_ids, num_embeddings: 61, embedding_dim: 32}
  - {id: self_attn, op: multi_head_attention, num_heads: 4, causal: true, in: dec}
  - {id: cross, op: multi_head_attention, num_heads: 4,
     in: {query: self_attn, key: enc, value: enc}}
  - {id: mixer, op: multi_head_attention, num_heads: 4, in: cross}
  - {id: head, op: linear, out_features: 61}
outputs: {logits: head}
"""


def test_a_decoder_attention_neither_causal_nor_cross_is_refused_with_its_node() -> None:
    """In an encoder-decoder's decoder part, attention that is not causal is cached as
    cross-attention only when it reads other keys than its queries; ``mixer`` attends over the
    decoder's own tokens both ways, which no cache can extend."""
    model = archcomp.build(BIDIRECTIONAL_DECODER, seed=0)
    with pytest.raises(CacheUnsupported, match=r"^mixer: a decoder's attention that is not causal"):
        model.new_cache(1, 8)
    cut = BIDIRECTIONAL_DECODER.replace("in: cross}", "in: cross, when: false}")
    model = archcomp.build(cut, seed=0).eval()  # without it: a causal layer and a cross layer
    src = torch.randint(0, 61, (2, 5), generator=torch.Generator().manual_seed(11))
    out = model.generate(src=src, max_new_tokens=4, decoder_start_token_id=3)
    assert out.shape == (2, 5) and (out[:, 0] == 3).all()


def test_the_summary_counts_cross_attention_keys_at_the_source_dims(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from archcomp.cli import main

    argv = ["summary", "t5", "-p", "N=1", "-p", "N_dec=1", "--kv-cache", "--context", "16"]
    assert main([*argv, "--json"]) == 0
    kv = json.loads(capsys.readouterr().out)["kv_cache"]
    shapes = {"self": [1, 12, 16, 64], "cross": [1, 12, 128, 64]}  # source S = 128 (dims)
    assert kv["layers"] == [
        {
            "layer": name,
            "tensors": {"k": shapes[kind], "v": shapes[kind]},
            "keys": shapes[kind],
            "values": shapes[kind],
            "bytes": 2 * 12 * 64 * 4 * shapes[kind][2],
        }
        for name, kind in [
            ("decoder.block.0.layer_0.SelfAttention", "self"),
            ("decoder.block.0.layer_1.EncDecAttention (cross)", "cross"),
        ]
    ]
    assert kv["bytes"] == 2 * 12 * 64 * 4 * (16 + 128)
