"""Import round trips of encoder-decoders: torch.nn.Transformer and nn.MultiheadAttention
(recognised as multi_head_attention with torch's packed in_proj, not rebuilt from matmuls), then
transformers' encoder-decoders from the command line. Each: import -> check -> build -> the
original state_dict loaded strictly -> outputs and gradients equal (tests/NUMERICS.md)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from equivalence import Case, check_case
from hf_models import quiet
from import_checks import cli_round_trip
from lowering import redraw
from numerics import RoundingChains, assert_close, assert_same
from torch import nn

import archcomp
from archcomp.base.errors import SpecError
from archcomp.cli.main import main
from archcomp.importer import ImportFailure
from archcomp.importer.hf import import_hf
from archcomp.importer.t5 import buckets
from archcomp.importer.t5_bodies import bucket_body

transformers = pytest.importorskip("transformers")


def round_trip(
    ref: nn.Module,
    example: dict[str, Any],
    run: dict[str, Any],
    ref_only: dict[str, Any] | None = None,
    **kw: Any,
) -> str:
    """Import ``ref`` on ``example``, build, load ref's state_dict strictly, then compare
    outputs and every gradient on the inputs ``run`` (other sizes where dims are symbols);
    ``ref_only``: arguments ref takes beside them (a causal mask the spec has no input for)."""
    torch.manual_seed(0)
    text = archcomp.import_module(ref, example, **kw)
    archcomp.check(text)
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()  # dropout off on both sides
    names = list(run)
    case = Case(
        model,
        ref,
        tuple(run.values()),
        lambda *xs: [_first(ref(**dict(zip(names, xs, strict=True)), **(ref_only or {})))],
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)
    return text


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def test_torch_transformer_round_trip() -> None:
    torch.manual_seed(1)
    ref = nn.Transformer(
        d_model=16,
        nhead=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=24,
        batch_first=True,
    )
    example = {"src": torch.randn(2, 5, 16), "tgt": torch.randn(2, 3, 16)}
    dims = {"B": 0, "S": ("src", 1), "T": ("tgt", 1)}
    text = round_trip(
        ref, example, {"src": torch.randn(3, 7, 16), "tgt": torch.randn(3, 4, 16)}, dims=dims
    )
    assert "  src: {shape: [B, S, 16]}\n  tgt: {shape: [B, T, 16]}\n" in text
    assert (
        "- {id: self_attn, op: multi_head_attention, num_heads: 4, in_proj: true, dropout: 0.1}"
        in text
    )
    assert (
        "- {id: multihead_attn, op: multi_head_attention, in: {query: norm1, key: x_2, "
        "value: x_2},\n         num_heads: 4, in_proj: true, dropout: 0.1}"
    ) in text
    assert "- {id: layers, op: transformer_encoder_layer, repeat: 2}" in text
    assert "- {id: layers, op: transformer_decoder_layer, in: [tgt, x_2], repeat: 2}" in text
    assert "- {id: decoder, op: transformer_decoder, in: [tgt, encoder]}" in text
    for plumbing in ("view", "transpose", "reshape", "matmul", "softmax"):
        assert plumbing not in text  # the head split and scores are the attention's


class SelfAndCross(nn.Module):
    """A norm, self-attention (need_weights left on, its weights unread), a residual, then
    cross-attention to ``mem`` with need_weights=False."""

    def __init__(self, bias: bool = True, batch_first: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 4, bias=bias, batch_first=batch_first)
        self.cross = nn.MultiheadAttention(16, 2, bias=bias, batch_first=batch_first)

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        a, _ = self.attn(h, h, h)
        return self.cross(x + a, mem, mem, need_weights=False)[0]


@pytest.mark.parametrize("bias", [True, False])
def test_multihead_attention_self_and_cross(bias: bool) -> None:
    torch.manual_seed(2)
    ref = SelfAndCross(bias)
    example = {"x": torch.randn(2, 5, 16), "mem": torch.randn(2, 3, 16)}
    run = {"x": torch.randn(3, 5, 16), "mem": torch.randn(3, 3, 16)}
    text = round_trip(ref, example, run, dims={"B": 0})
    off = ", bias: false" if not bias else ""
    assert f"- {{id: attn, op: multi_head_attention, num_heads: 4, in_proj: true{off}}}" in text
    assert "- {id: cross, op: multi_head_attention, in: {query: add, key: mem, value: mem}" in text


def test_sequence_first_attention_round_trip() -> None:
    torch.manual_seed(4)
    ref = SelfAndCross(batch_first=False)  # torch's default: (T, B, E)
    example = {"x": torch.randn(5, 2, 16), "mem": torch.randn(3, 2, 16)}
    run = {"x": torch.randn(5, 3, 16), "mem": torch.randn(3, 3, 16)}
    text = round_trip(ref, example, run, dims={"B": 1})
    assert (
        "- {id: attn, op: multi_head_attention, num_heads: 4, in_proj: true, batch_first: false}"
        in text
    )


def test_default_torch_transformer_round_trip() -> None:
    torch.manual_seed(5)
    with warnings.catch_warnings():  # torch's advice to use batch_first for speed
        warnings.simplefilter("ignore", UserWarning)
        ref = nn.Transformer(16, 4, 1, 1, 24)  # batch_first=False: (S, B, E) and (T, B, E)
    example = {"src": torch.randn(5, 2, 16), "tgt": torch.randn(3, 2, 16)}
    text = round_trip(
        ref, example, {"src": torch.randn(6, 3, 16), "tgt": torch.randn(4, 3, 16)}, dims={"B": 1}
    )
    assert "in_proj: true, batch_first: false, dropout: 0.1}" in text


class Masked(nn.Module):
    """Self-attention with a key_padding_mask, optionally an attn_mask too."""

    def __init__(self, batch_first: bool = True) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)

    def forward(
        self, x: torch.Tensor, pad: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.attn(x, x, x, key_padding_mask=pad, attn_mask=mask, need_weights=False)[0]


@pytest.mark.parametrize("batch_first", [True, False])
def test_a_key_padding_mask_is_the_attention_port(batch_first: bool) -> None:
    torch.manual_seed(6)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[0, 3:] = True  # the first sequence's last two keys are padding
    x = torch.randn(2, 5, 8) if batch_first else torch.randn(5, 2, 8)
    example = {"x": x, "pad": pad}
    text = round_trip(Masked(batch_first), example, example)
    assert "in: {query: x, key: x, value: x, key_padding_mask: pad}" in text


def test_a_mask_for_each_head_is_refused_with_its_line() -> None:
    x, pad = torch.randn(2, 5, 8), torch.zeros(2, 5, dtype=torch.bool)
    mask = torch.zeros(4, 5, 5, dtype=torch.bool)  # (B * heads, T, S): a mask per head
    with pytest.raises(ImportFailure) as e:
        archcomp.import_module(Masked(), (x, pad, mask))
    (problem,) = e.value.problems
    assert problem.startswith("MultiheadAttention self.attn (an attn_mask of shape (4, 5, 5)")
    assert "test_import_encdec.py:" in problem and "return self.attn(x, x, x," in problem  # ours


class Attn(nn.Module):
    """Self-attention with an attn_mask input (need_weights left on: the weights path)."""

    def __init__(self, batch_first: bool = True) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, attn_mask=mask)[0]


@pytest.mark.parametrize("batch_first", [True, False])
def test_a_float_attn_mask_input_is_the_mask_port(batch_first: bool) -> None:
    torch.manual_seed(8)
    x = torch.randn(2, 5, 8) if batch_first else torch.randn(5, 2, 8)
    example = {"x": x, "mask": torch.randn(5, 5)}  # any float mask: added to the scores
    text = round_trip(Attn(batch_first), example, {"x": x.clone(), "mask": torch.randn(5, 5)})
    assert "  mask: {shape: [5, 5]}\n" in text
    assert "in: {query: x, key: x, value: x, mask: mask}" in text


def test_a_bool_attn_mask_input_is_inverted_into_the_mask_port() -> None:
    torch.manual_seed(9)
    hide = torch.rand(5, 5) > 0.6
    hide.fill_diagonal_(False)  # every query keeps a key
    example = {"x": torch.randn(2, 5, 8), "mask": hide}
    text = round_trip(Attn(), example, example)
    assert "- {id: attn_keep, op: logical_not, in: mask}" in text  # torch hides True
    assert "in: {query: x, key: x, value: x, mask: attn_keep}" in text


def test_a_causal_attn_mask_input_is_causal_and_no_input() -> None:
    torch.manual_seed(10)
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    x = torch.randn(2, 5, 8)
    text = round_trip(Attn(), {"x": x, "mask": causal}, {"x": x}, ref_only={"mask": causal})
    assert "mask" not in text.split("blocks:")[0].split("nodes:")[0]  # no input for it
    assert "- {id: attn, op: multi_head_attention, num_heads: 2, in_proj: true, causal: true}" in (
        text
    )


class CausalInForward(nn.Module):
    """nn.MultiheadAttention given a causal mask made in forward, and a key_padding_mask (both
    bool: torch deprecates a float mask beside a bool one)."""

    def __init__(self, need_weights: bool) -> None:
        super().__init__()
        self.need_weights = need_weights
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        t = x.size(1)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)  # (T, T): True hides
        w = self.need_weights
        return self.attn(x, x, x, key_padding_mask=pad, attn_mask=mask, need_weights=w)[0]


@pytest.mark.parametrize("need_weights", [True, False])
def test_a_causal_mask_made_in_forward_beside_a_key_padding_mask(need_weights: bool) -> None:
    torch.manual_seed(14)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[0, 3:] = True
    example = {"x": torch.randn(2, 5, 8), "pad": pad}
    text = round_trip(CausalInForward(need_weights), example, example)
    assert (
        "in: {query: x, key: x, value: x, key_padding_mask: pad},\n"
        "     num_heads: 2, in_proj: true, causal: true}"
    ) in text


def test_sequence_first_transformer_with_a_bool_causal_tgt_mask() -> None:
    """torch's default layout, and a bool tgt_mask (True hides a key) that is causal."""
    torch.manual_seed(15)
    with warnings.catch_warnings():  # torch's advice to use batch_first for speed
        warnings.simplefilter("ignore", UserWarning)
        ref = nn.Transformer(16, 4, 1, 1, 24)

    def hide(t: int) -> torch.Tensor:
        return torch.ones(t, t, dtype=torch.bool).triu(1)

    example = {"src": torch.randn(5, 2, 16), "tgt": torch.randn(3, 2, 16), "tgt_mask": hide(3)}
    run = {"src": torch.randn(6, 3, 16), "tgt": torch.randn(4, 3, 16)}
    text = round_trip(ref, example, run, {"tgt_mask": hide(4)}, dims={"B": 1})
    assert "in_proj: true, batch_first: false,\n         causal: true, dropout: 0.1}" in text
    assert "tgt_mask" not in text


class Hinted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0]


def test_is_causal_with_an_attn_mask_that_is_not_causal_is_refused() -> None:
    """torch takes the hint and never reads the mask: the spec would have a dead input."""
    with pytest.raises(ImportFailure) as e:
        archcomp.import_module(Hinted(), (torch.randn(2, 5, 8), torch.randn(5, 5)))
    (problem,) = e.value.problems
    assert problem.startswith("input 'mask' is read by no call of the traced forward")


def test_cli_names_the_dims_of_a_mask_input(tmp_path: Path) -> None:
    """``--dims`` with a name given again at INPUT.DIM: the mask is [T, T], x [B, T, 8]."""
    out = tmp_path / "attn.yaml"
    argv = ["import", "import_models:MaskedAttention", "--input", "x=2,5,8", "--input"]
    dims = "B=x.0,T=x.1,T=mask.0,T=mask.1"
    assert main([*argv, "mask=5,5", "--dims", dims, "-o", str(out)]) == 0
    text = out.read_text()
    assert "  x: {shape: [B, T, 8]}\n  mask: {shape: [T, T]}\n" in text
    model = archcomp.build(text).eval()
    from import_models import MaskedAttention

    ref = MaskedAttention().eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x, mask = torch.randn(3, 7, 8), torch.randn(7, 7)
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(x, mask), ref(x, mask)
    assert_close(got, want, chains.tolerance(torch.float32, got, want))


class DecoderOnlyLM(nn.Module):
    """A GPT-style LM on nn.TransformerEncoder: the causal mask made in forward from T."""

    def __init__(self, hint: bool | None) -> None:
        super().__init__()
        self.hint = hint
        self.embed = nn.Embedding(23, 16)
        layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 23)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(ids.size(1))  # (T, T)
        return self.head(self.encoder(self.embed(ids), mask=mask, is_causal=self.hint))


@pytest.mark.parametrize("hint", [None, True])
def test_decoder_only_lm_with_a_causal_mask_made_in_forward(hint: bool | None) -> None:
    """is_causal=None: torch judges the mask by its values (torch.export cannot), here on the
    example's; True: torch's hint. Either way each attention is causal: true."""
    torch.manual_seed(11)
    ref = DecoderOnlyLM(hint)
    gen = torch.Generator().manual_seed(3)
    example = {"ids": torch.randint(0, 23, (2, 5), generator=gen)}
    run = {"ids": torch.randint(0, 23, (3, 9), generator=gen)}  # other B and T: symbols
    text = round_trip(ref, example, run, dims={"B": 0, "T": 1})
    assert (
        "- {id: self_attn, op: multi_head_attention, num_heads: 4, in_proj: true, causal: true,"
        in text
    )
    assert "  ids: {shape: [B, T], dtype: int64}\nblocks:" in text
    for plumbing in ("triu", "full", "mask"):
        assert plumbing not in text


class PaddedLM(DecoderOnlyLM):
    """The LM with a padding mask too: nn.TransformerEncoder makes a float copy of it (a bool
    causal mask: torch deprecates a float one beside a bool padding mask)."""

    def forward(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        t = ids.size(1)
        mask = torch.ones(t, t, dtype=torch.bool, device=ids.device).triu(1)  # (T, T)
        x = self.encoder(self.embed(ids), mask=mask, src_key_padding_mask=pad)
        return self.head(x)


def test_decoder_only_lm_with_a_padding_mask() -> None:
    torch.manual_seed(16)
    gen = torch.Generator().manual_seed(5)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 4:], pad[2, 6:] = True, True  # right padding: every query keeps key 0
    example = {"ids": torch.randint(0, 23, (3, 7), generator=gen), "pad": pad}
    text = round_trip(PaddedLM(None), example, example, dims={"B": 0, "T": 1})
    assert "  pad: {shape: [B, T], dtype: bool}\n" in text
    assert (
        "in: {query: norm1, key: norm1, value: norm1, key_padding_mask: x_2}, num_heads: 4,\n"
        "         in_proj: true, causal: true, dropout: 0.1}"
    ) in text
    assert "zeros_like" not in text and "masked_fill" not in text


@pytest.mark.parametrize("hint", [None, True])
def test_torch_transformer_with_a_causal_tgt_mask_input(hint: bool | None) -> None:
    """nn.Transformer as language models call it: tgt_mask=generate_square_subsequent_mask(T),
    with tgt_is_causal=True or not; the mask, causal on the example, is no input."""
    torch.manual_seed(12)
    ref = nn.Transformer(16, 4, 2, 2, 24, batch_first=True)
    flags = {} if hint is None else {"tgt_is_causal": hint}
    mask = nn.Transformer.generate_square_subsequent_mask
    example = {"src": torch.randn(2, 5, 16), "tgt": torch.randn(2, 3, 16), "tgt_mask": mask(3)}
    dims = {"B": 0, "S": ("src", 1), "T": ("tgt", 1)}
    run = {"src": torch.randn(3, 7, 16), "tgt": torch.randn(3, 4, 16)}
    text = round_trip(ref, example | flags, run, {"tgt_mask": mask(4)} | flags, dims=dims)
    assert "  src: {shape: [B, S, 16]}\n  tgt: {shape: [B, T, 16]}\nblocks:" in text
    assert "num_heads: 4, in_proj: true, causal: true,\n         dropout: 0.1}" in text
    assert text.count("causal: true") == 1  # the decoder's self-attention only


def test_torch_transformer_for_translation_with_every_padding_mask() -> None:
    """Source, target and memory padding, a bool causal tgt_mask, and one tensor given for
    both src_ and memory_key_padding_mask (torch.export would read it through one input)."""
    torch.manual_seed(17)
    ref = nn.Transformer(16, 4, 2, 2, 24, batch_first=True)
    src_pad = torch.zeros(3, 6, dtype=torch.bool)
    src_pad[0, 4:] = True
    tgt_pad = torch.zeros(3, 4, dtype=torch.bool)
    tgt_pad[1, 3:] = True
    causal = torch.ones(4, 4, dtype=torch.bool).triu(1)
    run = {
        "src": torch.randn(3, 6, 16),
        "tgt": torch.randn(3, 4, 16),
        "src_key_padding_mask": src_pad,
        "tgt_key_padding_mask": tgt_pad,
        "memory_key_padding_mask": src_pad,
    }
    with warnings.catch_warnings():  # torch's nested tensors, in its eager fast path
        warnings.simplefilter("ignore", UserWarning)
        text = round_trip(ref, run | {"tgt_mask": causal}, run, {"tgt_mask": causal}, dims={"B": 0})
    assert (
        "in: {query: x, key: x, value: x, key_padding_mask: x_2}, num_heads: 4, in_proj: true,"
        "\n         causal: true"
    ) in text
    assert "in: {query: norm1, key: x_3, value: x_3, key_padding_mask: x_4}" in text
    assert "tgt_mask" not in text


def test_torch_transformer_with_a_float_tgt_mask_input() -> None:
    """A tgt_mask that is not causal: an input, its dims named by input (over B's bare 0)."""
    torch.manual_seed(13)
    ref = nn.Transformer(16, 4, 1, 2, 24, batch_first=True)
    example = {"src": torch.randn(2, 5, 16), "tgt": torch.randn(2, 3, 16)}
    dims = {"B": 0, "S": ("src", 1), "T": [("tgt", 1), ("tgt_mask", 0), ("tgt_mask", 1)]}
    run = {"src": torch.randn(3, 7, 16), "tgt": torch.randn(3, 4, 16)}
    text = round_trip(
        ref,
        example | {"tgt_mask": torch.randn(3, 3)},
        run | {"tgt_mask": torch.randn(4, 4)},
        dims=dims,
    )
    assert "  tgt_mask: {shape: [T, T]}\n" in text
    assert "- {id: layers, op: transformer_decoder_layer, in: [tgt, tgt_mask, x_3], repeat: 2}" in (
        text
    )
    assert "in: {query: x, key: x, value: x, mask: x_2}" in text


def test_a_causal_hint_with_a_mask_that_is_not_causal_is_refused() -> None:
    ref = nn.Transformer(16, 4, 1, 1, 24, batch_first=True)
    example = {"src": torch.randn(2, 5, 16), "tgt": torch.randn(2, 3, 16)}
    with pytest.raises(ImportFailure) as e:
        archcomp.import_module(
            ref, example | {"tgt_mask": torch.randn(3, 3), "tgt_is_causal": True}
        )
    assert any("a causal hint (is_causal=True" in p for p in e.value.problems)


def test_in_proj_takes_keys_of_the_query_width() -> None:
    spec = """
archcomp: 1
name: t
inputs:
  x: {shape: [2, 5, 16]}
  m: {shape: [2, 3, 8]}
nodes:
  - {id: attn, op: multi_head_attention, in: {query: x, key: m, value: m}, num_heads: 4,
     in_proj: true}
outputs: {out: attn}
"""
    with pytest.raises(SpecError, match="in_proj packs q, k and v rows"):
        archcomp.check(spec)


def test_transformer_encoder_round_trip() -> None:
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=True)
    ref = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    text = round_trip(
        ref, {"src": torch.randn(2, 5, 8)}, {"src": torch.randn(3, 6, 8)}, dims={"B": 0, "T": 1}
    )
    assert "- {id: layers, op: transformer_encoder_layer, repeat: 2}" in text


# -- transformers' encoder-decoders, from the command line ----------------------------------------


def hf_saved(tmp_path: Path, cls: str, config: Any) -> tuple[Any, Path]:
    """A transformers model of ``config`` with every weight re-drawn, saved in a folder."""
    quiet()
    model = getattr(transformers, cls)(config)
    redraw(model, 5)
    folder = tmp_path / cls.lower()
    model.save_pretrained(folder)
    return model.eval(), folder


def grads_equal(text: str, ref: Any, inputs: dict[str, torch.Tensor], frozen: set[str]) -> None:
    """Outputs and gradients of the built spec, with ref's own state_dict loaded strictly."""
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    names = list(inputs)

    def forward(*xs: torch.Tensor) -> list[torch.Tensor]:
        out = ref(**dict(zip(names, xs, strict=True)), use_cache=False)
        return [out.logits, out.encoder_last_hidden_state]

    grads = {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()}
    case = Case(model, ref, tuple(inputs.values()), forward, grads)
    for n in frozen:  # frozen in transformers (the spec trains it): no gradient to compare
        del case.grads[n]
    check_case(case)


def test_whisper_round_trip_from_the_cli(tmp_path: Path) -> None:
    config = transformers.WhisperConfig(
        vocab_size=61,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=24,
        decoder_ffn_dim=24,
        num_mel_bins=8,
        max_source_positions=6,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
        decoder_start_token_id=0,
    )
    ref, folder = hf_saved(tmp_path, "WhisperForConditionalGeneration", config)
    text, model = cli_round_trip(tmp_path, folder)
    assert "  input_features: {shape: [B, 8, 12]}\n  decoder_input_ids:" in text
    assert (
        "- {id: conv2, op: conv1d, out_channels: 16, kernel_size: 3, stride: 2, padding: 1}" in text
    )
    assert "- {id: embed_positions, op: learned_positional_encoding, max_len: 16}" in text
    assert "in: {query: encoder_attn_layer_norm, key: x_2, value: x_2}" in text
    assert "outputs: {logits: proj_out, encoder_last_hidden_state: model.out0}" in text
    gen = torch.Generator().manual_seed(4)
    inputs = {
        "input_features": torch.randn(3, 8, 12, generator=gen),
        "decoder_input_ids": torch.randint(0, 61, (3, 7), generator=gen),
    }
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(**inputs), ref(**inputs, use_cache=False)
    tol = chains.tolerance(torch.float32, got["logits"], want.logits)
    assert_close(got["logits"], want.logits, tol)
    grads_equal(text, ref, inputs, {"model.encoder.embed_positions.weight"})


def test_bart_round_trip_from_the_cli(tmp_path: Path) -> None:
    """BartForConditionalGeneration: its shared embedding and tied LM head
    (tests/test_import_ties.py), positions (offset 2), masks, cross-attention, and its
    ``final_logits_bias``, a buffer of its own: a ``buffer`` node keyed by its name, loaded
    from the saved folder (re-drawn, not zero); logits and every gradient equal."""
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
    quiet()
    ref = transformers.BartForConditionalGeneration(config)
    redraw(ref, 5)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # a buffer: redraw leaves it at transformers' zeros
        ref.final_logits_bias.copy_(torch.randn(ref.final_logits_bias.shape, generator=gen))
    folder = tmp_path / "bart"
    ref.save_pretrained(folder)
    ref.eval()
    text, model = cli_round_trip(tmp_path, folder)
    assert '- {id: final_logits_bias, op: buffer, shape: [1, "${vocab_size}"], key: self}' in text
    assert "- {id: lm_head, op: linear, in: model.out1, tie: {weight: model.shared.weight}," in text
    assert "- {id: add, op: add, in: [lm_head, final_logits_bias]}" in text
    assert_same(model.final_logits_bias, ref.final_logits_bias)
    inputs = {
        "input_ids": torch.randint(0, 61, (3, 9), generator=gen),
        "decoder_input_ids": torch.randint(0, 61, (3, 6), generator=gen),
    }
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(**inputs), ref(**inputs, use_cache=False)
    tol = chains.tolerance(torch.float32, got["logits"], want.logits)
    assert_close(got["logits"], want.logits, tol)
    grads_equal(text, ref, inputs, set())


def t5_config(**kw: Any) -> Any:
    """A small T5: d_model 20 apart from h * d_kv = 16, 3 decoder layers beside 2 encoder
    ones, 8 buckets up to distance 16 (the test's 20 source tokens reach the capped bucket)."""
    return transformers.T5Config(
        vocab_size=61,
        d_model=20,
        d_kv=4,
        d_ff=24,
        num_layers=2,
        num_decoder_layers=3,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        **({"architectures": ["T5ForConditionalGeneration"]} | kw),
    )


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_t5_round_trip_from_the_cli(tmp_path: Path, version: str) -> None:
    """T5 v1.0 (ReLU, the decoder's output scaled by d_model**-0.5 before the tied head) and
    v1.1 (gated tanh-GELU, unscaled: transformers 5 reads its tie_word_embeddings: false as
    scale_decoder_outputs: false and ties the head all the same): import --hf, convert --spec,
    logits and every gradient equal with transformers' own state_dict loaded strictly."""
    v11 = version == "1.1"
    kw = {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False} if v11 else {}
    ref, folder = hf_saved(tmp_path, "T5ForConditionalGeneration", t5_config(**kw))
    text, model = cli_round_trip(tmp_path, folder)
    assert (
        "- {id: relative_attention_bias, op: embedding, in: position_bias, num_embeddings: 8,\n"
        '         embedding_dim: 4, when: "${has_relative_attention_bias}"}'
    ) in text  # block.0.layer.0.SelfAttention.relative_attention_bias.weight
    assert "in: {query: query, key: key, value: value, score_bias: bias}, scale: 1.0," in text
    assert "causal: true" in text  # the decoder's self-attention
    assert '{id: block, op: t5_block, repeat: "${num_hidden_layers}",' in text
    assert '{id: block, op: t5_block_2, repeat: "${num_decoder_layers}",' in text
    assert "{id: layer, op: t5_layer_2, repeat: 3," in text  # self, cross, feed-forward
    assert (
        '{id: DenseReluDense, op: t5_dense_act_dense, in: EncDecAttention, when: "${index == 2}"'
        in text
    )
    assert "- {id: lm_head, op: linear, tie: {weight: shared.weight}" in text
    assert ("- {id: mul, op: mul, scalar: 0.22360679774997896}" in text) != v11
    assert ("{id: act, op: gelu, approximate: tanh}" in text) == v11
    gen = torch.Generator().manual_seed(7)
    inputs = {
        "input_ids": torch.randint(0, 61, (3, 20), generator=gen),
        "decoder_input_ids": torch.randint(0, 61, (3, 18), generator=gen),
    }
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(**inputs), ref(**inputs, use_cache=False)
    for key, expected in (
        ("logits", want.logits),
        ("encoder_last_hidden_state", want.encoder_last_hidden_state),
    ):
        assert_close(got[key], expected, chains.tolerance(torch.float32, got[key], expected))
    grads_equal(text, ref, inputs, set())


@pytest.mark.parametrize("cls", ["T5Model", "T5EncoderModel"])
def test_t5_model_and_encoder_import(tmp_path: Path, cls: str) -> None:
    """The other T5 classes hold the same T5Stack: import_hf, the state_dict loaded strictly,
    outputs equal."""
    config = t5_config(architectures=[cls])
    ref, folder = hf_saved(tmp_path, cls, config)
    text = import_hf(folder)
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(8)
    inputs = {"input_ids": torch.randint(0, 61, (2, 11), generator=gen)}
    if cls == "T5Model":
        inputs["decoder_input_ids"] = torch.randint(0, 61, (2, 4), generator=gen)
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(**inputs), ref(**inputs)
    got = next(iter(got.values())) if isinstance(got, dict) else got
    assert_close(got, want[0], chains.tolerance(torch.float32, got, want[0]))


@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (8, 16)])
@pytest.mark.parametrize("dec", [False, True])
def test_t5_bucket_block_is_transformers(num_buckets: int, max_distance: int, dec: bool) -> None:
    """The t5_relative_position_bucket block an import writes computes transformers' own
    bucket ids, past max_distance too, both ways (the import also checks the traced lookup
    against them on the example's sizes)."""
    from transformers.models.t5.modeling_t5 import T5Attention

    body = bucket_body(num_buckets, max_distance, dec)
    spec = {
        "archcomp": 1,
        "name": "buckets",
        "inputs": {"q": {"shape": [1, 140, 1]}, "k": {"shape": [1, 150, 1]}},
        "blocks": {"bucket": {k: body[k] for k in ("inputs", "nodes", "outputs")}},
        "nodes": [{"id": "ids", "op": "bucket", "in": ["q", "k"]}],
        "outputs": {"out": "ids"},
    }
    model = archcomp.build(yaml.safe_dump(spec, sort_keys=False))
    got = model(q=torch.zeros(1, 140, 1), k=torch.zeros(1, 150, 1))
    rel = torch.arange(150)[None, :] - torch.arange(140)[:, None]
    want = T5Attention._relative_position_bucket(rel, not dec, num_buckets, max_distance)
    assert torch.equal(got, want)
    assert torch.equal(buckets(140, 150, num_buckets, max_distance, dec), want)


def test_t5_refusal_names_the_module_and_its_line(tmp_path: Path) -> None:
    """An activation no op computes (transformers' clipped GELU) is refused with the line of
    its module's first call."""
    t5_config(feed_forward_proj="gelu_10").save_pretrained(tmp_path / "t5")
    with pytest.raises(ImportFailure) as e:
        import_hf(tmp_path / "t5")
    problems = e.value.problems
    assert [p.split(" at ")[0] for p in problems] == [
        "T5Stack self.encoder (a T5 feed-forward activation ClippedGELUActivation)",
        "T5Stack self.decoder (a T5 feed-forward activation ClippedGELUActivation)",
    ]
    assert "activations.py:" in problems[0]


def test_t5_call_its_blocks_do_not_compute_is_refused_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack is written from its modules; a call of the traced graph that those blocks
    do not compute (here a feed-forward patched to take exp) is listed with its line."""
    from transformers.models.t5 import modeling_t5

    def forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
        return (
            hidden_states + self.dropout(self.DenseReluDense(self.layer_norm(hidden_states))).exp()
        )

    monkeypatch.setattr(modeling_t5.T5LayerFF, "forward", forward)
    t5_config().save_pretrained(tmp_path / "t5")
    with pytest.raises(ImportFailure) as e:
        import_hf(tmp_path / "t5")
    problems = e.value.problems
    assert [p.split(" at ")[0] for p in problems] == [
        "encoder: aten.exp.default (no call of the blocks a T5Stack is written as)",
        "decoder: aten.exp.default (no call of the blocks a T5Stack is written as)",
    ]
    assert problems[0].endswith(".exp()")
