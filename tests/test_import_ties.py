"""Weights shared across blocks: a tie on a block call into a node of it (``tie:
{embed_tokens.weight: shared.weight}``), a ``parameter`` kept by the ties that read it, and
``archcomp import --hf`` of BART's embedding shared by ``model.shared``, its encoder and its
decoder: a round trip from the command line (tests/NUMERICS.md tolerances)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import Case, check_case
from hf_models import quiet
from lowering import redraw
from numerics import RoundingChains, Tolerance, assert_close
from torch import nn

import archcomp
from archcomp.base.errors import SpecError
from archcomp.cli.main import main

transformers = pytest.importorskip("transformers")

TIED = """
archcomp: 1
name: tied
blocks:
  enc:
    inputs: [x]
    nodes:
      - {id: embed_tokens, op: embedding, num_embeddings: 11, embedding_dim: 4}
    outputs: embed_tokens
inputs:
  ids: {shape: [2, 3], dtype: int64}
nodes:
  - {id: shared, op: parameter, shape: [11, 4]}
  - {id: encoder, op: enc, in: ids, tie: {TIE: shared.weight}}
  - {id: decoder, op: enc, in: ids, tie: {embed_tokens.weight: shared.weight}}
  - {id: add, op: add, in: [encoder, decoder]}
outputs: {y: add}
"""


def test_a_tie_on_a_block_call_shares_one_parameter() -> None:
    """Both calls' embed_tokens are shared.weight: one Parameter under three keys, whose
    gradient is the sum of both lookups'."""
    model = archcomp.build(TIED.replace("TIE", "embed_tokens.weight"))
    assert list(model.state_dict()) == [
        "shared.weight",
        "encoder.embed_tokens.weight",
        "decoder.embed_tokens.weight",
    ]
    (w,) = model.parameters()
    ids = torch.tensor([[0, 3, 3], [10, 1, 0]])
    model(ids=ids).pow(2).sum().backward()  # y = 2 w[ids]: dy^2/dw = 8 w per lookup
    want = torch.zeros_like(w)
    want.index_add_(0, ids.flatten(), (8 * w[ids]).reshape(-1, 4))
    assert_close(w.grad, want, Tolerance(torch.float32, 4))  # a row summed over <= 4 lookups


@pytest.mark.parametrize(
    ("tie", "message"),
    [
        ("embed_token.weight", "'embed_token.weight': the block call has no node 'embed_token'"),
        # bare, it names a node keyed by its id (key: self); the block has no node 'weight'
        ("weight", "tie 'weight': the block call has no node 'weight'"),
    ],
)
def test_a_tie_on_a_block_call_names_a_node_of_it(tie: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        archcomp.check(TIED.replace("TIE", tie))


def test_a_parameter_no_tie_holds_is_unused() -> None:
    """A tie whose ``when`` is false keeps nothing alive."""
    text = TIED.replace("TIE", "embed_tokens.weight").replace("tie: {", "tie: {when: false, ")
    with pytest.raises(SpecError, match="node is never used"):
        archcomp.check(text)


def _bart(tmp_path: Path, cls: str) -> tuple[Any, Path]:
    """A tiny random BART of class ``cls``, every weight re-drawn, saved in a folder."""
    quiet()
    config = transformers.BartConfig(
        vocab_size=61,
        d_model=16,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=24,
        decoder_ffn_dim=24,
        max_position_embeddings=32,
    )
    model = getattr(transformers, cls)(config)
    redraw(model, 5)
    folder = tmp_path / cls.lower()
    model.save_pretrained(folder)
    return model.eval(), folder


def test_bart_model_round_trip_from_the_cli(tmp_path: Path) -> None:
    """BartModel: model.shared (never called) is a parameter node, the encoder's and
    decoder's embed_tokens tied to it from their calls; convert --spec loads the saved folder,
    transformers' state_dict loads strictly, outputs and every gradient equal."""
    ref, folder = _bart(tmp_path, "BartModel")
    spec, art = tmp_path / "spec.yaml", tmp_path / "weights.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    assert '- {id: shared, op: parameter, shape: ["${vocab_size}", "${hidden_size}"]}' in text
    for call in ("encoder", "decoder"):  # each call ties its embed_tokens to shared
        assert "tie: {embed_tokens.weight: shared.weight}" in text.split(f"id: {call},")[1][:99]
    gen = torch.Generator().manual_seed(4)
    inputs = {
        "input_ids": torch.randint(0, 61, (3, 9), generator=gen),
        "decoder_input_ids": torch.randint(0, 61, (3, 6), generator=gen),
    }
    model = archcomp.load(art).eval()
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(**inputs), ref(**inputs, use_cache=False)
    tol = chains.tolerance(torch.float32, got["last_hidden_state"], want.last_hidden_state)
    assert_close(got["last_hidden_state"], want.last_hidden_state, tol)

    built = archcomp.build(text).eval()
    built.load_state_dict(ref.state_dict(), strict=True)
    names = list(inputs)

    def forward(*xs: torch.Tensor) -> list[torch.Tensor]:
        out = ref(**dict(zip(names, xs, strict=True)), use_cache=False)
        return [out.last_hidden_state, out.encoder_last_hidden_state]

    grads = {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in built.named_parameters()}
    check_case(Case(built, ref, tuple(inputs.values()), forward, grads))


class _LmHead(nn.Module):
    """BartForConditionalGeneration's model and tied LM head, without its final_logits_bias."""

    def __init__(self, bart: nn.Module) -> None:
        super().__init__()
        self.model, self.lm_head = bart.model, bart.lm_head

    def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, decoder_input_ids=decoder_input_ids)
        return self.lm_head(out[0])  # (B, T, vocab_size)


def test_an_lm_head_ties_into_the_shared_parameter_of_a_call() -> None:
    """BART's LM head, tied to model.shared, ties into the model call's parameter node: one
    Parameter for the four keys; logits and every gradient equal."""
    quiet()
    config = transformers.BartConfig(
        vocab_size=61,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=24,
        decoder_ffn_dim=24,
        max_position_embeddings=32,
        use_cache=False,
    )
    bart = transformers.BartForConditionalGeneration(config)
    redraw(bart, 6)
    ref = _LmHead(bart).eval()
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 61, (2, 7), generator=gen)
    dec = torch.randint(0, 61, (2, 5), generator=gen)
    dims = {"B": 0, "S": ("input_ids", 1), "T": ("decoder_input_ids", 1)}
    text = archcomp.import_module(ref, {"input_ids": ids, "decoder_input_ids": dec}, dims=dims)
    assert "- {id: lm_head, op: linear, tie: {weight: model.shared.weight}" in text
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    run = (torch.randint(0, 61, (3, 9), generator=gen), torch.randint(0, 61, (3, 4), generator=gen))
    grads = {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()}
    check_case(Case(model, ref, run, lambda *xs: [ref(*xs)], grads))


class _Inner(nn.Module):
    def __init__(self, shared: nn.Embedding) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.emb.weight = shared.weight
        self.lin = nn.Linear(4, 4)

    def forward(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.lin(h) + self.emb(ids)  # (B, T, 4)


class _Outer(nn.Module):
    """A never-called ``shared`` embedding that each copy of a ModuleList reads as its own
    ``emb``; the MultiheadAttention makes import trace it with torch.export."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Embedding(11, 4)
        self.layers = nn.ModuleList([_Inner(self.shared) for _ in range(2)])
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)

    def forward(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = layer(h, ids)
        return self.attn(h, h, h, need_weights=False)[0]


def test_a_tie_into_every_copy_of_a_repeat() -> None:
    """The repeat keeps its copies' tie (each copy's emb is shared.weight): one Parameter,
    outputs and every gradient equal."""
    torch.manual_seed(3)
    ref = _Outer().eval()
    gen = torch.Generator().manual_seed(3)
    example = (torch.randn(2, 3, 4, generator=gen), torch.randint(0, 11, (2, 3), generator=gen))
    text = archcomp.import_module(ref, example)
    assert (
        "- {id: layers, op: inner, in: [h, ids], repeat: 2, tie: {emb.weight: shared.weight}}"
        in text
    )
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    grads = {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()}
    check_case(Case(model, ref, example, lambda *xs: [ref(*xs)], grads))
