"""`archcomp import --hf` of BERT: its attention at ``attention.self`` (a node id now), its
padding ``attention_mask`` (the attention's ``key_padding_mask``), its tied MLM decoder (the
weight the word embeddings', the bias the head's own bare ``bias``), from
small random configs with every weight re-drawn, saved with save_pretrained, imported and
converted from the command line, and compared with transformers to tests/NUMERICS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import Case, check_case
from hf_models import quiet
from lowering import redraw
from numerics import RoundingChains, assert_close

import archcomp
from archcomp.cli.main import main
from archcomp.importer.hf import import_hf

transformers = pytest.importorskip("transformers")
VOCAB = 61
BERT = dict(
    num_hidden_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    intermediate_size=48,
    vocab_size=VOCAB,
    max_position_embeddings=16,
)


def saved(tmp_path: Path, model: str, **fields: Any) -> tuple[Any, Path]:
    """A re-drawn transformers ``model`` of BertConfig(**fields) and the folder it is saved in."""
    quiet()
    ref = getattr(transformers, model)(transformers.BertConfig(**fields))
    redraw(ref, 3)
    folder = tmp_path / model.lower()
    ref.save_pretrained(folder)
    return ref.eval(), folder


def inputs(t: int = 9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, token_type_ids (two segments) and a padding attention_mask (the first
    sequence padded after 6 tokens, the second after 3), as the spec's inputs are ordered."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, t), generator=g)
    mask = torch.ones(2, t, dtype=torch.int64)
    mask[0, 6:] = 0
    mask[1, 3:] = 0
    return ids, (torch.arange(t) >= t // 2).long().expand(2, t), mask


def call(model: Any, x: tuple[torch.Tensor, ...]) -> Any:
    return model(input_ids=x[0], token_type_ids=x[1], attention_mask=x[2])


def outputs_equal(model: Any, ref: Any, names: list[str]) -> None:
    x = inputs()
    model.eval()
    with torch.no_grad(), RoundingChains() as chains:
        got, want = call(model, x), call(ref, x)
        unpadded = ref(input_ids=x[0], token_type_ids=x[1])
    got = got if isinstance(got, dict) else {names[0]: got}
    assert list(got) == names
    for name in names:
        assert_close(got[name], want[name], chains.tolerance(torch.float32, got[name], want[name]))
    assert not torch.allclose(want[names[0]], unpadded[names[0]])  # the padding tells


def gradients_equal(text: str, ref: Any, names: list[str]) -> None:
    """The built spec with transformers' own state_dict (strictly, no mapping): the outputs and
    every parameter's gradient equal."""
    model = archcomp.build(text)
    model.load_state_dict(ref.state_dict(), strict=True)
    model.eval()
    case = Case(
        model,
        ref,
        inputs(),
        lambda *x: [call(ref, x)[n] for n in names],
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)


@pytest.mark.parametrize(
    ("model", "names"),
    [
        ("BertForMaskedLM", ["logits"]),
        ("BertForPreTraining", ["prediction_logits", "seq_relationship_logits"]),
        ("BertModel", ["last_hidden_state", "pooler_output"]),
    ],
)
def test_bert_round_trip_from_the_cli(tmp_path: Path, model: str, names: list[str]) -> None:
    ref, folder = saved(tmp_path, model, **BERT)
    spec, art = tmp_path / "bert.yaml", tmp_path / "bert.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    assert (
        "- {id: self, op: multi_head_attention, in: {query: x, key_padding_mask: x_2},\n"
        '         num_heads: "${num_attention_heads}", dropout: 0.1, q_name: query, k_name: key,\n'
        "         v_name: value, out_proj: false}"
    ) in text  # at transformers' path; the padding mask every layer's attention takes
    assert "token_type_ids: {shape: [B, T], dtype: int64}" in text
    assert "attention_mask: {shape: [B, T], dtype: int64}" in text
    assert "- {id: padding_mask, op: eq, in: attention_mask, scalar: 0}" in text
    if model != "BertModel":  # the MLM decoder: the embeddings' weight, the head's own bias
        assert '- {id: bias, op: parameter, shape: ["${vocab_size}"], key: self}' in text
        assert "{id: decoder, op: linear, tie: {bias: bias}" in text
        assert "tie: {predictions.decoder.weight: bert.embeddings.word_embeddings.weight}" in text
    built = archcomp.load(art)
    assert "encoder.layer.1.attention.self.query.weight" in "".join(built.state_dict())
    outputs_equal(built, ref, names)
    gradients_equal(text, ref, names)


def test_a_tie_reads_a_parameter_keyed_by_its_id() -> None:
    """``tie: {bias: bias}`` where ``bias`` is ``{op: parameter, key: self}``: the node's own
    tensor (its key is its id), shared, trained once."""
    text = """
archcomp: 1
name: t
inputs: {x: {shape: [2, 8]}}
nodes:
  - {id: bias, op: parameter, shape: [5], key: self}
  - {id: decoder, op: linear, in: x, out_features: 5, tie: {bias: bias}}
outputs: {y: decoder}
"""
    model = archcomp.build(text, seed=0)
    assert model.get_parameter("decoder.bias") is model.get_parameter("bias")
    assert [n for n, _ in model.named_parameters()] == ["bias", "decoder.weight"]
    x = torch.randn(2, 8)
    model(x).sum().backward()
    assert model.get_parameter("bias").grad is not None
    torch.testing.assert_close(model.get_parameter("bias").grad, torch.full((5,), 2.0))


def test_an_untied_head_holds_its_unread_bias_by_an_unused_node(tmp_path: Path) -> None:
    """With ``tie_word_embeddings: false`` transformers ties neither the decoder's weight nor
    its bias: ``cls.predictions.bias`` is read by no forward, so a ``parameter`` node with
    ``unused: true`` holds it (as DINOv2's mask token): transformers' whole state_dict loads
    strictly, ``convert --spec`` of the saved folder loads it, and the outputs are equal."""
    ref, folder = saved(tmp_path, "BertForPreTraining", tie_word_embeddings=False, **BERT)
    spec, art = tmp_path / "bert.yaml", tmp_path / "bert.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    text = spec.read_text()
    assert "tie:" not in text
    assert '- {id: bias, op: parameter, shape: ["${vocab_size}"], key: self, unused: true}' in text
    model = archcomp.build(text)
    model.load_state_dict(ref.state_dict(), strict=True)
    outputs_equal(model, ref, ["prediction_logits", "seq_relationship_logits"])
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    built = archcomp.load(art)
    assert torch.equal(built.get_parameter("cls.predictions.bias"), ref.cls.predictions.bias)
    outputs_equal(built, ref, ["prediction_logits", "seq_relationship_logits"])


def test_a_decoder_berts_causal_padding_mask(tmp_path: Path) -> None:
    """A decoder BERT's mask is the padding and-ed with a causal mask (archcomp/importer/
    padding.py): each attention ``causal: true`` beside the ``key_padding_mask``; outputs equal
    at the tokens the mask keeps (a padded query's row is transformers' own choice)."""
    ref, folder = saved(tmp_path, "BertModel", is_decoder=True, **BERT)
    text = import_hf(folder)
    assert "in: {query: x, key_padding_mask: x_2}" in text
    assert "dropout: 0.1, causal: true, q_name: query" in text
    model = archcomp.from_pretrained(folder, text)
    model.eval()
    x = inputs()
    keep = x[2].bool()
    with torch.no_grad(), RoundingChains() as chains:
        got, want = call(model, x)["last_hidden_state"], call(ref, x)["last_hidden_state"]
        assert_close(got[keep], want[keep], chains.tolerance(torch.float32, got, want))
