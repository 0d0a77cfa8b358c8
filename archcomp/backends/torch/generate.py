"""Text generation with a compiled decoder: a KV-cached forward, sampling and ``generate``.

``model.new_cache(batch_size, max_length)`` makes a :class:`~archcomp.nn.kv_cache.KVCache`;
``model.forward_cached(ids, cache)`` runs new tokens through the model, reading and extending
the cache; ``model.generate(ids, max_new_tokens, ...)`` is the decoding loop on top: a prefill of
the prompt, then one token per step, greedy or sampled (temperature, top-k, top-p in that order,
as transformers' logits warpers). With ``compile=True`` the one-token step is a
``torch.compile``-d function over a static cache (every shape fixed), compiled once per model and
cache, as gpt-fast does.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from archcomp.backends.torch.seq2seq import (
    decode,
    encode,
    encoder_inputs,
    is_encoder_decoder,
    split,
)
from archcomp.nn.kv_cache import KVCache, ScanState

Callback = Callable[[Tensor], Any]  # called with each step's new tokens (B,)


@dataclass
class Compiled:
    """A model's compiled functions and the static cache they were compiled against."""

    cache: KVCache
    step: Callable[[Tensor, Tensor], Tensor]  # (token (B, 1), position (1,)) -> logits (B, V)
    prefill: Callable[[Tensor], Tensor]  # prompt (B, T) -> its last logits (B, V)
    encode: Callable[..., tuple[Tensor, ...]]  # an encoder-decoder's encoder inputs -> outputs


_COMPILED: weakref.WeakKeyDictionary[nn.Module, Compiled] = weakref.WeakKeyDictionary()
# how the one-token step is compiled: one graph, every shape static (a test may set a backend)
COMPILE_OPTIONS: dict[str, Any] = {"fullgraph": True, "dynamic": False}
# the prefill: one graph whose prompt length is symbolic, as gpt-fast compiles its prefill
# (dynamic=True): one compilation serves every prompt length, where static shapes would
# recompile per length (or pad each prompt to a bucket and compute the padding)
PREFILL_OPTIONS: dict[str, Any] = {"fullgraph": True, "dynamic": True}
# a model with Mamba layers: its prefill's scan loops over the prompt (chunks of it), so its
# graph has static shapes, one per prompt length (every later token runs the one step graph)
SCAN_PREFILL_OPTIONS: dict[str, Any] = {"fullgraph": True, "dynamic": False}


def logits_of(model: nn.Module, ids: Tensor) -> Tensor:
    """The model's logits (B, T, V) for ids (B, T): its one output, or the one named logits
    (a dict of outputs, or from_pretrained's ModelOutput)."""
    out = model(ids)
    if isinstance(out, dict):
        out = out["logits"] if "logits" in out or len(out) != 1 else next(iter(out.values()))
    return out


def _head(model: Any) -> nn.Module | None:
    """The linear layer that makes the logits, when the spec's logits output is one (a
    token-wise op: its input's last position alone gives the last logits)."""
    spec, node_meta = getattr(model, "spec", None), getattr(model, "node_meta", None)
    if not isinstance(spec, dict) or not isinstance(node_meta, dict):
        return None  # not an ArchModule
    outputs = spec.get("outputs", {})
    if not isinstance(outputs, dict) or not isinstance(model, nn.Module):
        return None
    node = str(outputs.get("logits", next(iter(outputs.values()), ""))).split(".")[0]
    meta = node_meta.get(node)
    if not meta or meta.get("op") != "linear" or not meta.get("module"):
        return None
    head = model.get_submodule(meta["module"])
    return head if isinstance(head, nn.Linear) else None


@contextmanager
def last_position_only(model: nn.Module) -> Iterator[None]:
    """Within it, the logits layer sees only the last position (a prefill needs no more: the
    LM head of a long prompt costs as much as the rest of the step)."""
    head = _head(model)
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(lambda m, args: (args[0][:, -1:], *args[1:]))
    try:
        yield
    finally:
        handle.remove()


# a logits layer at least this large (weights) is read column-major while generating on a CPU
COLUMN_MAJOR_HEAD = 1 << 20


@contextmanager
def column_major_head(model: nn.Module) -> Iterator[None]:
    """Within it, a CPU model's logits layer holds its weight (V, d) column-major (the
    transpose of a contiguous (d, V)): the same values and shape, but a one-token step's
    matrix-vector product reads it about twice as fast (the vocabulary's head is most of a
    small model's per-token work). The original tensor is put back after; a model whose head
    is small, or not a plain contiguous matrix, or on another device, is left as it is."""
    head = _head(model)
    weight = head.weight if head is not None else None
    if (
        weight is None
        or weight.device.type != "cpu"
        or weight.numel() < COLUMN_MAJOR_HEAD
        or not weight.is_contiguous()
    ):
        yield
        return
    original = weight.data
    with torch.inference_mode(False):  # a normal tensor, usable by autograd later
        weight.data = original.t().contiguous().t()  # (V, d), strides (1, V)
    try:
        yield
    finally:
        weight.data = original


def check_decoder(model: Any) -> None:
    """A decoder for generation: one input (token ids) and a logits output; or an
    encoder-decoder whose target tokens are ``decoder_input_ids``."""
    names = getattr(model, "input_names", ())
    outs = getattr(model, "output_names", ())
    if (len(names) != 1 and not is_encoder_decoder(model)) or not (
        len(outs) == 1 or "logits" in outs
    ):
        raise ValueError(
            f"generation needs a decoder with one input (token ids) or an encoder-decoder with "
            f"decoder_input_ids, and a logits output; {getattr(model, 'name', 'this model')} "
            f"takes {list(names)} and gives {list(outs)}"
        )


def _scope(model: Any) -> tuple[str, ...] | None:
    """What a cache binds: an encoder-decoder's decoder part; everything of a decoder."""
    return split(model).scope if is_encoder_decoder(model) else None


def _logits(model: Any, ids: Tensor, cache: KVCache) -> Tensor:
    """Logits (B, T, V) of new tokens ``ids`` with ``cache`` bound: a decoder's forward, or
    an encoder-decoder's decoder part on the encoder outputs the cache keeps."""
    if cache.encoder_outputs is not None:
        return decode(model, ids, cache.encoder_outputs)
    return logits_of(model, ids)


def new_cache(
    model: nn.Module,
    batch_size: int,
    max_length: int,
    *,
    dtype: torch.dtype | None = None,
    static: bool = False,
) -> KVCache:
    check_decoder(model)
    return KVCache(model, batch_size, max_length, dtype=dtype, static=static, scope=_scope(model))


def cache_memory(
    model: nn.Module,
    batch_size: int,
    max_length: int,
    dtype: torch.dtype | None = None,
    encoder_inputs: dict[str, Tensor] | None = None,
) -> list[tuple[str, dict[str, tuple[int, ...]], int]]:
    """Per cached module: (name, shape of each tensor it keeps by name, bytes) of a cache for
    ``batch_size`` sequences of ``max_length`` tokens: ``k``, ``v`` of attention, ``conv`` and
    ``ssm`` of a Mamba layer. A model on meta allocates nothing. An encoder-decoder's
    cross-attention rows too (named ``... (cross)``) when ``encoder_inputs`` give the source: a
    one-token step is run (on meta: shapes only) to size them."""
    device = next(model.parameters()).device
    cache = KVCache(model, batch_size, max_length, dtype=dtype, device=device, scope=_scope(model))
    entries: list[tuple[str, Any]] = list(cache.layers.items())
    if encoder_inputs is not None and is_encoder_decoder(model):
        start = torch.zeros(batch_size, 1, dtype=torch.int64, device=device)
        with torch.no_grad():
            forward_cached(model, start, cache, encoder_inputs=encoder_inputs)
        entries += [(f"{name} (cross)", cross) for name, cross in cache.cross.items()]
    return [
        (name, {t: tuple(x.shape) for t, x in entry.tensors.items()}, entry.nbytes)
        for name, entry in entries
    ]


def forward_cached(
    model: nn.Module,
    input_ids: Tensor,
    cache: KVCache,
    attention_mask: Tensor | None = None,
    *,
    last_only: bool = False,
    encoder_inputs: dict[str, Tensor] | None = None,
) -> Tensor:
    """Logits (B, T, V) of new tokens ``input_ids`` (B, T) after those the cache holds; the
    cache then holds them too. ``attention_mask`` (B, T), first call only: 0 = left padding.
    ``last_only``: the logits of the last position (B, 1, V), where the model allows it.
    An encoder-decoder: ``input_ids`` (and their ``attention_mask``) are the decoder's tokens;
    ``encoder_inputs`` (first call only, by the spec's input names) run the encoder once, whose
    outputs the cache keeps."""
    if input_ids.dim() != 2 or input_ids.size(0) != cache.batch_size:
        raise ValueError(
            f"input_ids must be (batch {cache.batch_size}, T), not {tuple(input_ids.shape)}"
        )
    if is_encoder_decoder(model):
        _encode_into(model, cache, encoder_inputs)
    elif encoder_inputs is not None:
        raise ValueError("encoder_inputs are for an encoder-decoder; this model is a decoder")
    cache.state.begin(input_ids.size(1), attention_mask)
    with cache.bound(model), last_position_only(model) if last_only else nullcontext():
        logits = _logits(model, input_ids, cache)
    cache.state.advance(input_ids.size(1))
    return logits


def _encode_into(model: Any, cache: KVCache, inputs: dict[str, Tensor] | None) -> None:
    """Run the encoder on ``inputs`` once per prompt (the cache's first forward) and keep its
    outputs in the cache."""
    if inputs is None:
        if cache.encoder_outputs is None:
            raise ValueError("the first forward_cached of an encoder-decoder needs encoder_inputs")
        return
    if cache.length:
        raise ValueError("encoder_inputs go with the first forward_cached after a reset only")
    inputs = encoder_inputs(model, dict(inputs))
    batch = {tuple(t.shape)[:1] for t in inputs.values()}
    if batch != {(cache.batch_size,)}:
        raise ValueError(f"encoder inputs must have batch {cache.batch_size}, not {batch}")
    cache.encoder_outputs = encode(model, inputs)


def warp(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None) -> Tensor:
    """Scores (B, V) after temperature, top-k and top-p (nucleus) filtering, in that order;
    filtered tokens get -inf (transformers' warpers, keeping at least one token)."""
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)  # ascending
        cum = sorted_logits.softmax(-1).cumsum(-1)  # (B, V)
        drop = cum <= 1 - top_p  # the low tail holding at most 1 - top_p
        drop[..., -1:] = False  # the most likely token stays
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def next_tokens(
    logits: Tensor,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Tensor:
    """(B,) next token of each row from the last position's logits (B, V)."""
    if not do_sample:
        return logits.argmax(-1)
    probs = warp(logits.float(), temperature, top_k, top_p).softmax(-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check_args(
    input_ids: Tensor, max_new_tokens: int, temperature: float, top_p: float | None
) -> None:
    if input_ids.dim() != 2 or input_ids.size(1) == 0:
        raise ValueError(f"input_ids must be (B, T) with T >= 1, not {tuple(input_ids.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, not {max_new_tokens}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (greedy: do_sample=False), not {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], not {top_p}")


def _cache_for(model: nn.Module, batch: int, length: int, compile: bool) -> KVCache:
    """A cache for ``batch`` rows of ``length`` tokens: with compile, the model's static cache
    when it fits (one compilation serves every call), else a new one."""
    if compile:
        held = _COMPILED.get(model)
        if held is not None and held.cache.batch_size == batch and held.cache.max_length >= length:
            held.cache.reset()
            return held.cache
    return new_cache(model, batch, length, static=compile)


def _compiled(model: nn.Module, cache: KVCache) -> Compiled:
    """The one-token step, the prefill and an encoder-decoder's encoder over ``cache``, compiled
    once per model and cache. The step sets the cache's positions and masks from a position
    tensor inside its graph and returns the last logits: no Python work per token but the
    call."""
    held = _COMPILED.get(model)
    if held is not None and held.cache is cache:
        return held

    def step(ids: Tensor, position: Tensor) -> Tensor:
        cache.state.begin_step(position)
        return _logits(model, ids, cache)[:, -1]  # (B, V)

    def prefill(ids: Tensor) -> Tensor:
        cache.state.begin(ids.size(1))  # positions and masks of the symbolic length
        return _logits(model, ids, cache)[:, -1]  # (B, V)

    parts: Any = model  # an encoder-decoder's GraphModule
    names = split(parts).encoder_inputs if is_encoder_decoder(model) else ()

    def encoder(*inputs: Tensor) -> tuple[Tensor, ...]:
        return encode(parts, dict(zip(names, inputs, strict=True)))

    scans = any(isinstance(e, ScanState) for e in cache.layers.values())
    held = Compiled(
        cache,
        torch.compile(step, **COMPILE_OPTIONS),
        torch.compile(prefill, **(SCAN_PREFILL_OPTIONS if scans else PREFILL_OPTIONS)),
        torch.compile(encoder, **PREFILL_OPTIONS),  # the source's length symbolic
    )
    _COMPILED[model] = held
    return held


def _prefill(
    model: nn.Module,
    prompt: Tensor,
    cache: KVCache,
    mask: Tensor | None,
    enc: dict[str, Tensor] | None,
    compiled: Compiled | None,
) -> Tensor:
    """The prompt's last logits (B, V), the cache then holding it: compiled for a decoder's
    prompt of two tokens or more (a model with Mamba layers: a graph per prompt length). An
    encoder-decoder's encoder is compiled, its decoder prompt (a token or a few) runs eager:
    its first forward projects the cross-attention's keys and values once."""
    if compiled is not None and enc is not None:
        cache.encoder_outputs = tuple(compiled.encode(*enc.values()))  # in the spec's order
        enc = None  # the cache holds the encoder's outputs
    if compiled is None or is_encoder_decoder(model) or prompt.size(1) < 2:
        return forward_cached(model, prompt, cache, mask, last_only=True, encoder_inputs=enc)[:, -1]
    if mask is not None:  # the rows' padding, read by the graph's begin
        cache.state.begin(prompt.size(1), mask)
    with cache.bound(model), last_position_only(model):
        logits = compiled.prefill(prompt)
    cache.state.advance(prompt.size(1))
    return logits


def _prompt(
    model: Any,
    input_ids: Tensor | None,
    attention_mask: Tensor | None,
    decoder_input_ids: Tensor | None,
    decoder_start_token_id: int | None,
    encoder_kw: dict[str, Tensor],
    decoder_attention_mask: Tensor | None = None,
    forced: list[list[Any]] | None = None,
) -> tuple[Tensor, Tensor | None, dict[str, Tensor] | None]:
    """(the decoder's prompt, its padding mask, the encoder's inputs or None): a decoder's
    prompt is ``input_ids``; an encoder-decoder's ``decoder_input_ids``, by default one
    ``decoder_start_token_id`` per row (the model's, from its config.json), then the
    ``forced`` decoder ids."""
    forced = forced or []
    if not is_encoder_decoder(model):
        extra = {"decoder_input_ids": decoder_input_ids, **encoder_kw}
        extra["decoder_attention_mask"] = decoder_attention_mask
        extra["decoder_start_token_id"] = decoder_start_token_id  # type: ignore[assignment]
        unexpected = [k for k, v in extra.items() if v is not None]
        if unexpected:
            raise TypeError(f"a decoder's generate takes input_ids, not {unexpected}")
        if input_ids is None:
            raise TypeError("generate() needs input_ids")
        return input_ids, attention_mask, None
    source = {"input_ids": input_ids, "attention_mask": attention_mask, **encoder_kw}
    enc = encoder_inputs(model, source)
    if decoder_input_ids is not None:
        if decoder_attention_mask is not None and (
            decoder_attention_mask.shape != decoder_input_ids.shape
        ):
            raise ValueError(
                f"decoder_attention_mask {tuple(decoder_attention_mask.shape)} must have "
                f"decoder_input_ids' shape {tuple(decoder_input_ids.shape)}"
            )
        return decoder_input_ids, decoder_attention_mask, enc
    if decoder_attention_mask is not None:
        raise ValueError("decoder_attention_mask goes with decoder_input_ids")
    start = decoder_start_token_id
    start = start if start is not None else getattr(model, "decoder_start_token_id", None)
    if start is None:
        raise ValueError(
            "an encoder-decoder's generate needs decoder_start_token_id (from_pretrained reads "
            "config.json's) or decoder_input_ids"
        )
    first = next(iter(enc.values()))
    tokens = [start, *forced_ids(forced)]
    prompt = torch.tensor(tokens, dtype=torch.int64, device=first.device)
    return prompt.expand(first.size(0), -1), None, enc


def forced_ids(forced: list[list[Any]]) -> list[int]:
    """The decoder prompt's tokens after the start from ``forced_decoder_ids`` [[1, id],
    [2, id], ...] (Whisper's language, task and no-timestamps tokens, as transformers'
    Whisper generate puts them in its prompt)."""
    for i, (index, token) in enumerate(forced, start=1):
        if index != i:
            raise ValueError(
                f"forced_decoder_ids must force positions 1, 2, ... in order, not {forced}"
            )
        if token is None:
            raise ValueError(
                "forced_decoder_ids leaves the language open (null): transformers' Whisper "
                "detects it, archcomp does not; pass decoder_input_ids (the start, language and "
                "task tokens) or forced_decoder_ids with the language's id"
            )
    return [int(token) for _, token in forced]


@torch.inference_mode()
def generate(
    model: nn.Module,
    input_ids: Tensor | None = None,
    max_new_tokens: int | None = None,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    attention_mask: Tensor | None = None,
    seed: int | None = None,
    callback: Callback | None = None,
    compile: bool = False,
    cache: KVCache | None = None,
    decoder_input_ids: Tensor | None = None,
    decoder_start_token_id: int | None = None,
    decoder_attention_mask: Tensor | None = None,
    forced_decoder_ids: list[list[Any]] | None = None,
    suppress_tokens: list[int] | None = None,
    begin_suppress_tokens: list[int] | None = None,
    **encoder_inputs: Tensor,
) -> Tensor:
    """The prompt ``input_ids`` (B, T) followed by up to ``max_new_tokens`` new tokens per row:
    (B, T + n). Rows of a batch are left-padded (``attention_mask`` 0 at padding). A row that
    has produced an ``eos_token_id`` continues with ``pad_token_id`` (default: the first eos),
    and decoding stops when every row has; ``callback`` gets each step's tokens (B,).

    An encoder-decoder: ``input_ids`` and ``attention_mask`` (or ``input_features``, any of the
    spec's encoder inputs by name) are the source, encoded once; the result is the decoder's
    prompt (``decoder_input_ids``, default: ``decoder_start_token_id``; rows of different
    lengths left-padded, ``decoder_attention_mask`` 0 there) and its new tokens."""
    if max_new_tokens is None:
        raise TypeError("generate() needs max_new_tokens")
    prompt, mask, enc = _prompt(
        model,
        input_ids,
        attention_mask,
        decoder_input_ids,
        decoder_start_token_id,
        encoder_inputs,
        decoder_attention_mask,
        _rule(model, "forced_decoder_ids", forced_decoder_ids),
    )
    _check_args(prompt, max_new_tokens, temperature, top_p)
    batch, length = prompt.shape
    if cache is None:
        cache = _cache_for(model, batch, length + max_new_tokens, compile)
    elif compile and not cache.static:
        raise ValueError("generate(compile=True) needs a static cache: new_cache(..., static=True)")
    else:
        cache.reset()
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    generator = None
    if do_sample and seed is not None:
        generator = torch.Generator(device=prompt.device).manual_seed(seed)
    switch = _longrope_switch(model)  # LongRoPE: passed by a step (cache length == switch)
    switch = switch if length <= switch <= length + max_new_tokens - 2 else 0
    if switch and compile:
        raise ValueError(
            "generate(compile=True) of a model with LongRoPE (Phi-3 128K): the step that "
            "passes its original context runs the whole sequence again; use compile=False"
        )
    choose = functools.partial(
        next_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=generator,
    )
    banned = _ids(_rule(model, "suppress_tokens", suppress_tokens), prompt.device)
    banned_first = _ids(_rule(model, "begin_suppress_tokens", begin_suppress_tokens), prompt.device)

    def pick(logits: Tensor, i: int) -> Tensor:
        for ids in (banned, banned_first if i == 0 else None):
            if ids is not None:  # transformers' (begin_)suppress_tokens: never these (first)
                logits = logits.index_fill(-1, ids, float("-inf"))
        return choose(logits)

    out = torch.empty(batch, length + max_new_tokens, dtype=prompt.dtype, device=prompt.device)
    out[:, :length] = prompt
    with column_major_head(model):
        compiled = _compiled(model, cache) if compile else None
        logits = _prefill(model, prompt, cache, mask, enc, compiled)
        with cache.bound(model):  # once for every step
            step = _stepper(model, cache, compiled)
            if switch:
                step = _restarting(step, model, cache, out, mask, switch)
            n = _loop(logits, step, out, length, pick, eos, pad, callback)
    return out[:, : length + n]


def _rule(model: nn.Module, name: str, given: Any) -> Any:
    """A generation rule: the keyword's value, else the model's (from_pretrained reads
    generation_config.json's); an empty list turns the model's off."""
    if given is not None:
        return given
    return getattr(model, "generation_rules", {}).get(name)


def _ids(tokens: list[int] | None, device: torch.device) -> Tensor | None:
    """Token ids as an index tensor, None when there are none."""
    if not tokens:
        return None
    return torch.tensor([int(t) for t in tokens], dtype=torch.int64, device=device)


def _longrope_switch(model: nn.Module) -> int:
    """The original context of the model's LongRoPE (0: none)."""
    from archcomp.nn.rotary import RotaryEmbedding

    for m in model.modules():
        if isinstance(m, RotaryEmbedding) and m._long:
            return m._switch
    return 0


def _restarting(
    step: Callable[[Tensor], Tensor],
    model: nn.Module,
    cache: KVCache,
    out: Tensor,
    mask: Tensor | None,
    switch: int,
) -> Callable[[Tensor], Tensor]:
    """LongRoPE (Phi-3's 128K models): the step that makes the sequence longer than the
    original context ``switch`` runs the whole sequence again from an empty cache, as
    transformers' Phi-3 generate does, so that every key takes the long factors; the
    steps after it take them at their positions (the rotary tables' switch)."""

    def run(ids: Tensor) -> Tensor:
        n = cache.length
        if n != switch:
            return step(ids)
        cache.reset()
        full = out[:, : n + 1]  # (B, switch + 1): the new token written by the loop
        if mask is not None:
            mask_ = torch.cat([mask, mask.new_ones(mask.size(0), n + 1 - mask.size(1))], 1)
        cache.state.begin(n + 1, mask if mask is None else mask_)
        with last_position_only(model):  # the cache is bound by the loop's caller
            logits = _logits(model, full, cache)[:, -1]
        cache.state.advance(n + 1)
        return logits

    return run


def _stepper(
    model: nn.Module, cache: KVCache, compiled: Compiled | None
) -> Callable[[Tensor], Tensor]:
    """The one-token step, token (B, 1) -> last logits (B, V), with the cache bound: the
    compiled step at a position tensor kept on the device, or the eager forward."""
    if compiled is None:

        def eager(ids: Tensor) -> Tensor:
            cache.state.begin(1)
            logits = _logits(model, ids, cache)[:, -1]
            cache.state.advance(1)
            return logits

        return eager
    position = torch.tensor([cache.length], device=cache.state.slots.device)  # (1,)

    def step(ids: Tensor) -> Tensor:
        cache.state.check_room(1)  # the graph sets positions and masks
        logits = compiled.step(ids, position)
        cache.state.advance(1)
        position.add_(1)
        return logits

    return step


def _loop(
    logits: Tensor,
    step: Callable[[Tensor], Tensor],
    out: Tensor,
    start: int,
    pick: Callable[[Tensor, int], Tensor],
    eos: list[int],
    pad: int,
    callback: Callback | None,
) -> int:
    """Write the new tokens into ``out`` (B, start + n) from column ``start`` on, from the
    prefill's last logits (B, V): pick one per row (given the logits and the new token's
    index), feed it back through ``step``, until eos or the end of ``out``; return how many
    were written."""
    batch, device = logits.size(0), logits.device
    total = out.size(1) - start
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    eos_t = torch.tensor(eos, dtype=torch.int64, device=device)
    for i in range(total):
        token = pick(logits, i)  # (B,)
        if eos:
            token = token.masked_fill(done, pad)
        out[:, start + i] = token
        if callback is not None:
            callback(token)
        if eos:
            done = done | torch.isin(token, eos_t)
            if bool(done.all()):
                return i + 1
        if i + 1 < total:
            logits = step(token[:, None])  # (B, V)
    return total
