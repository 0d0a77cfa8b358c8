"""Encoder-decoder generation: the compiled model's forward split in two, by what reads the
decoder's tokens.

An encoder-decoder spec (T5, BART, Whisper) takes its target tokens as ``decoder_input_ids``.
Every node of the top-level graph that does not depend on them (the encoder, the source
padding mask) forms the *encoder part*, run once per prompt; the rest (the decoder, the LM
head) the *decoder part*, run at every step with the encoder part's results it reads as inputs.
Both parts call the model's own submodules (no copy). The decoder part's submodules are the
scope of the KV cache: causal self-attention there is cached as a decoder's, and attention that
is not causal is cross-attention, whose keys and values of the encoder's output the cache
projects once per prompt (:class:`~archcomp.nn.cache_state.CrossKV`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, cast

from torch import Tensor, fx, nn

from archcomp.backends.torch.outputs import model_output

DECODER_INPUT = "decoder_input_ids"


@dataclass(frozen=True)
class Seq2Seq:
    """The two parts of an encoder-decoder's forward."""

    encode: fx.GraphModule  # encoder inputs -> tuple of what the decoder part reads
    decode: fx.GraphModule  # (decoder_input_ids, *encoder outputs) -> logits (B, T, V)
    encoder_inputs: tuple[str, ...]  # the spec's inputs the encoder part takes, in order
    scope: tuple[str, ...]  # the submodules the decoder part calls (what a cache binds)


_SPLITS: weakref.WeakKeyDictionary[nn.Module, Seq2Seq] = weakref.WeakKeyDictionary()


def is_encoder_decoder(model: Any) -> bool:
    """A compiled model with a ``decoder_input_ids`` input and other inputs beside it."""
    names = tuple(getattr(model, "input_names", ()))
    return DECODER_INPUT in names and len(names) > 1


def _logits_node(graph: fx.Graph) -> Any:
    """What the forward returns as logits: its one output, or the one named logits."""
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    if isinstance(out, fx.Node) and out.target is model_output:  # from_pretrained's ModelOutput
        names, *values = out.args
        out = dict(zip(cast(tuple[str, ...], names), values, strict=True))
    return out.get("logits") if isinstance(out, dict) else out


def _is_end(node: fx.Node) -> bool:
    """The forward's output, or from_pretrained's ModelOutput made just before it: no part's."""
    return node.op == "output" or node.target is model_output


def _decoder_nodes(graph: fx.Graph, start: fx.Node) -> set[fx.Node]:
    """The nodes that depend on ``start`` (itself included)."""
    tainted = {start}
    for node in graph.nodes:
        if not _is_end(node) and any(a in tainted for a in node.all_input_nodes):
            tainted.add(node)
    return tainted


def split(model: fx.GraphModule) -> Seq2Seq:
    """The model's encoder and decoder parts (made once per model)."""
    held = _SPLITS.get(model)
    if held is not None:
        return held
    graph = model.graph
    start = next(n for n in graph.nodes if n.op == "placeholder" and n.target == DECODER_INPUT)
    decoder = _decoder_nodes(graph, start)
    logits = _logits_node(graph)
    if not isinstance(logits, fx.Node) or logits not in decoder:
        raise ValueError("generation needs a logits output computed from decoder_input_ids")
    # what reads no input (parameters, buffers): recomputed by the decoder part where it reads it
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    free = {n for n in graph.nodes if n.op != "placeholder" and not _is_end(n)} - set().union(
        *(_decoder_nodes(graph, n) for n in placeholders)
    )
    memory = [
        n
        for n in graph.nodes
        if n not in decoder and n not in free and not _is_end(n)
        if any(u in decoder for u in n.users)
    ]
    enc_graph, env = fx.Graph(), dict[fx.Node, fx.Node]()
    for node in graph.nodes:
        if node not in decoder and not _is_end(node):
            env[node] = enc_graph.node_copy(node, lambda n: env[n])
    enc_graph.output(tuple(env[n] for n in memory))
    dec_graph, denv = fx.Graph(), dict[fx.Node, fx.Node]()
    denv[start] = dec_graph.placeholder(DECODER_INPUT)
    for node in memory:
        denv[node] = dec_graph.placeholder(node.name)
    for node in graph.nodes:
        if (node in decoder or node in free) and node is not start and not _is_end(node):
            denv[node] = dec_graph.node_copy(node, lambda n: denv[n])
    dec_graph.output(denv[logits])
    inputs = tuple(n.target for n in enc_graph.nodes if n.op == "placeholder")
    scope = tuple(sorted({str(n.target) for n in dec_graph.nodes if n.op == "call_module"}))
    parts = Seq2Seq(
        _module(model, enc_graph, "Encode"),
        _module(model, dec_graph, "Decode"),
        tuple(str(name) for name in inputs),
        scope,
    )
    _SPLITS[model] = parts
    return parts


def _module(model: fx.GraphModule, graph: fx.Graph, name: str) -> fx.GraphModule:
    """A GraphModule running ``graph`` on ``model``'s own submodules, unused nodes dropped."""
    module = fx.GraphModule(model, graph, name)
    module.graph.eliminate_dead_code()
    module.recompile()
    return module


def encoder_inputs(model: fx.GraphModule, given: dict[str, Tensor | None]) -> dict[str, Tensor]:
    """The encoder part's inputs by name from ``given`` (None = not given); a missing
    ``attention_mask`` is all ones (no padding). Raises naming what is missing or unknown."""
    names = split(model).encoder_inputs
    unknown = sorted(k for k, v in given.items() if v is not None and k not in names)
    if unknown:
        raise TypeError(
            f"{getattr(model, 'name', 'this model')}'s encoder takes {list(names)}, not {unknown}"
        )
    inputs = {k: v for k, v in given.items() if v is not None}
    first = next(iter(inputs.values()), None)
    if "attention_mask" in names and "attention_mask" not in inputs and first is not None:
        inputs["attention_mask"] = first.new_ones(first.shape[:2], dtype=first.dtype)
    missing = [n for n in names if n not in inputs]
    if missing:
        raise TypeError(f"generation of an encoder-decoder needs its encoder inputs {missing}")
    return {n: inputs[n] for n in names}


def encode(model: fx.GraphModule, inputs: dict[str, Tensor]) -> tuple[Tensor, ...]:
    """The encoder part's outputs the decoder part reads (run once per prompt)."""
    out = split(model).encode(*(inputs[n] for n in split(model).encoder_inputs))
    return tuple(out)


def decode(model: fx.GraphModule, ids: Tensor, memory: tuple[Tensor, ...]) -> Tensor:
    """Logits (B, T, V) of decoder tokens ``ids`` (B, T) reading the encoder's ``memory``."""
    out: Tensor = split(model).decode(ids, *memory)
    return out
