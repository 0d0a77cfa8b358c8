"""Relative position biases (archcomp/ops/relative_bias.py): t5_relative_position_bias and
swin_relative_position_bias, and Swin's shift mask (swin_shift_mask, equal to transformers'
get_attn_mask for each image). Shapes, parameters and buffers, located errors; T5's buckets and
Swin's index against transformers' own; T5Attention (encoder and causal decoder) and Swin's
window attention (with a shift mask on the mask input) against the spec's bias op feeding
multi_head_attention's score_bias, forward and gradients.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lowering import (
    additive,
    check_declared,
    check_equivalent,
    compile_spec,
    error_of,
    fails,
    hf_config,
    hf_names,
    out,
    redraw,
    spec,
    where,
)

from archcomp.ir.dims import Sym, mul

B, T, S = (Sym.symbol(n) for n in "BTS")

OPS = {
    "t5_relative_position_bias": ("embedding", "Relative Position Bias"),
    "swin_relative_position_bias": ("embedding", "Relative Position Bias"),
    "swin_shift_mask": ("shape", "Shift Mask"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def test_shapes_params_and_buffers() -> None:
    x = "x: [B, T, 16]\n  m: [B, S, 16]"
    assert out(x, "op: t5_relative_position_bias, num_heads: 4, in: {query: x, key: m}") == (
        1,
        4,
        T,
        S,
    )
    assert out("x: [B, T, 16]", "op: t5_relative_position_bias, num_heads: 4") == (1, 4, T, T)
    g, gm = compile_spec(
        spec(
            "x: [B, 6, 16]",
            "- {id: t5, op: t5_relative_position_bias, num_heads: 4, num_buckets: 16}\n"
            "- {id: sw, op: swin_relative_position_bias, window_size: [2, 3], num_heads: 4}",
            "{a: t5, b: sw}",
        )
    )  # check_state: declared parameters and buffers = the modules'
    assert g.output_types["b"].shape == (1, 4, 6, 6)  # type: ignore[union-attr]
    n = g.nodes["sw"]
    assert n.op.param_shapes(n.args) == {"relative_position_bias_table": (3 * 5, 4)}
    assert n.op.buffer_shapes(n.args) == {"relative_position_index": (6, 6)}
    assert list(gm.state_dict()) == [
        "t5.relative_attention_bias.weight",
        "sw.relative_position_bias_table",
    ]  # the index is rebuilt, never saved


def test_errors() -> None:
    fails(
        "x: [B, T, 16]",
        "op: t5_relative_position_bias, num_heads: 4, num_buckets: 32, max_distance: 8",
        "max_distance 8 must exceed the 8 exact buckets",
        "8}",
    )
    text = spec(
        "x: [B, 9, 16]",
        "- {id: n, op: swin_relative_position_bias, num_heads: 4, window_size: [2, 3, 4]}\n"
        "- {id: attn, op: multi_head_attention, num_heads: 4, in: {query: x, score_bias: n}}",
        "{y: attn}",
    )
    assert error_of(text) == (
        "window_size must be a positive int or [Wh, Ww], found [2, 3, 4]",
        *where(text, "[2, 3, 4]"),
    )
    fails(
        "x: {shape: [B, T], dtype: int64}",
        "op: t5_relative_position_bias, num_heads: 4",
        "t5_relative_position_bias needs a floating-point input, found int64",
        "t5_relative_position_bias",
    )


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("buckets", "distance"), [(32, 128), (8, 20)])
def test_t5_buckets_are_transformers(bidirectional: bool, buckets: int, distance: int) -> None:
    from transformers.models.t5.modeling_t5 import T5Attention

    from archcomp.nn.positional import t5_buckets

    rel = torch.arange(-400, 401)[None, :] - torch.arange(3)[:, None]
    want = T5Attention._relative_position_bucket(rel, bidirectional, buckets, distance)
    assert torch.equal(t5_buckets(rel, bidirectional, buckets, distance), want)


@pytest.mark.parametrize("window", [(3, 3), (2, 3)])
def test_swin_index_is_transformers(window: tuple[int, int]) -> None:
    from transformers.models.swin.modeling_swin import SwinRelativePositionBias

    from archcomp.nn.positional import swin_index

    want = SwinRelativePositionBias(4, window).relative_position_index
    assert torch.equal(swin_index(window).flatten(), want)


@pytest.mark.parametrize("decoder", [False, True], ids=["encoder", "causal-decoder"])
def test_t5_attention_with_relative_bias_matches_transformers(decoder: bool) -> None:
    from transformers.models.t5.modeling_t5 import T5Attention

    config = hf_config(
        "T5",
        d_model=32,
        d_kv=12,  # head size apart from d_model / h
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=20,
        is_decoder=decoder,
    )
    hf = T5Attention(config, has_relative_attention_bias=True, layer_idx=0).eval()  # no dropout
    flags = "bidirectional: false, " if decoder else ""
    text = spec(
        "x: [B, T, 32]",
        f"- {{id: rel, op: t5_relative_position_bias, num_heads: 4, num_buckets: 16, "
        f"max_distance: 20, {flags}in: x}}\n"
        "- {id: attn, op: multi_head_attention, num_heads: 4, head_dim: 12, bias: false,"
        f" scale: 1.0, causal: {str(decoder).lower()}, in: {{query: x, score_bias: rel}}}}",
        "{y: attn}",
    )
    _, gm = compile_spec(text)
    redraw(hf, seed=8)
    n = 30  # distances past the exact buckets and past max_distance
    x = torch.randn(2, n, 32, generator=torch.Generator().manual_seed(9))
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    mask = additive(causal) if decoder else None
    rename = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "out_proj": "o"}
    check_equivalent(gm, lambda x: hf(x, mask=mask)[0], (x,), hf_names(gm, hf, rename))


@pytest.mark.parametrize("shifted", [False, True], ids=["W-MSA", "SW-MSA"])
def test_swin_window_attention_with_relative_bias_matches_transformers(shifted: bool) -> None:
    from transformers.models.swin.modeling_swin import SwinAttention

    config = hf_config("Swin", embed_dim=32, qkv_bias=True)
    hf = SwinAttention(config, 32, 4, 3).eval()
    windows, batch, n = 4, 2, 9  # a window of 3 x 3 positions
    ins = "x: [BW, 9, 32]"
    ports = "in: {query: x, score_bias: rel}"
    if shifted:
        ins += "\n  m: [BW, 1, 9, 9]"
        ports = "in: {query: x, score_bias: rel, mask: m}"
    text = spec(
        ins,
        "- {id: rel, op: swin_relative_position_bias, window_size: 3, num_heads: 4}\n"
        f"- {{id: attn, op: multi_head_attention, num_heads: 4, {ports}}}",
        "{y: attn}",
    )
    _, gm = compile_spec(text)
    redraw(hf, seed=10)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(batch * windows, n, 32, generator=gen)
    # the shifted windows' mask: 0 within a region, -100 across regions (as Swin builds it)
    region = torch.randint(0, 3, (windows, n), generator=gen)
    shift = (region[:, :, None] != region[:, None, :]).float() * -100.0  # (nW, N, N)
    tiled = shift.repeat(batch, 1, 1)[:, None]  # (B nW, 1, N, N): window w of every image

    def forward(x: torch.Tensor, *_: Any) -> torch.Tensor:
        return hf(x, attention_mask=shift if shifted else None)[0]

    rename = {
        "out_proj": "o_proj",
        "relative_position_bias_table": "relative_position_bias.relative_position_bias_table",
    }
    inputs = (x, tiled) if shifted else (x,)
    check_equivalent(gm, forward, inputs, hf_names(gm, hf, rename), grad_inputs=1)


def test_swin_bias_builds_on_meta_and_refills_its_index() -> None:
    from archcomp.nn.positional import SwinRelativePositionBias, swin_index

    m = SwinRelativePositionBias((2, 3), 4, device="meta")
    assert m.relative_position_bias_table.is_meta
    m.to_empty(device="cpu")
    m.reset_parameters()
    assert torch.equal(m.relative_position_index, swin_index((2, 3)))


def _hf_shift_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """transformers' (nW, N, N) mask of a SwinLayer with that map, window and shift."""
    from transformers.models.swin.modeling_swin import SwinLayer

    config = hf_config("Swin", embed_dim=8, window_size=window)
    layer = SwinLayer(config, dim=8, input_resolution=(h, w), num_heads=2, shift_size=shift)
    mask = layer.get_attn_mask(h, w, dtype=torch.float32, device=torch.device("cpu"))
    assert mask is not None
    return mask


def test_swin_shift_mask_shapes_and_buffer() -> None:
    op = "op: swin_shift_mask, window_size: 3, shift: 1"
    assert out("x: [B, 6, 9, 8]", op) == (mul(B, 6), 1, 9, 9)
    assert out("x: [2, 6, 6, 8]", op) == (8, 1, 9, 9)
    g, gm = compile_spec(spec("x: [B, 6, 9, 8]", f"- {{id: n, {op}}}"))  # buffers declared
    n = g.nodes["n"]
    assert (n.args.height, n.args.width) == (6, 9)  # inferred
    assert n.op.buffer_shapes(n.args) == {"mask": (6, 9, 9)}
    assert list(gm.state_dict()) == []  # rebuilt from the sizes, never saved


def test_swin_shift_mask_errors() -> None:
    fails(
        "x: [B, 6, 6, 8]",
        "op: swin_shift_mask, window_size: 3, shift: 3",
        "shift 3 must be below window_size 3",
        "3}",
    )
    fails(
        "x: [B, 6, 7, 8]",
        "op: swin_shift_mask, window_size: 3, shift: 1",
        "the map's W (7) is not a multiple of window_size 3",
        "swin_shift_mask",
    )
    fails(
        "x: [B, 36, 8]",
        "op: swin_shift_mask, window_size: 3, shift: 1",
        "x must be a map [B, H, W, C], found [B, 36, 8]",
        "swin_shift_mask",
    )
    fails(
        "x: [B, T, 6, 8]",
        "op: swin_shift_mask, window_size: 3, shift: 1",
        "the map's H must be a concrete size, found symbolic 'T'",
        "swin_shift_mask",
    )


@pytest.mark.parametrize(
    ("h", "w", "window", "shift"), [(6, 6, 3, 1), (6, 9, 3, 2), (14, 14, 7, 3), (8, 4, 4, 2)]
)
def test_swin_shift_mask_is_transformers(h: int, w: int, window: int, shift: int) -> None:
    """The mask of every image is get_attn_mask's, window for window, in the input's dtype."""
    text = spec(f"x: [B, {h}, {w}, 8]", f"- {{id: n, op: swin_shift_mask, window_size: "
                f"{window}, shift: {shift}}}")  # fmt: skip
    _, gm = compile_spec(text)
    want = _hf_shift_mask(h, w, window, shift)
    got = gm(torch.zeros(3, h, w, 8))
    assert torch.equal(got[:, 0], want.repeat(3, 1, 1))
    assert gm(torch.zeros(2, h, w, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16
    # a planted bug, the regions of the unrolled map (no shift), is caught by the same check
    from archcomp.nn.positional import swin_shift_mask

    wrong = swin_shift_mask(h, w, window, 0, -100.0)
    assert not torch.equal(wrong, want)


def test_swin_shift_mask_without_shift_is_zero() -> None:
    """shift 0 (W-MSA): transformers builds no mask; every window lies in one region."""
    _, gm = compile_spec(
        spec("x: [B, 6, 6, 8]", "- {id: n, op: swin_shift_mask, window_size: 3, shift: 0}")
    )
    assert torch.equal(gm(torch.ones(2, 6, 6, 8)), torch.zeros(8, 1, 9, 9))


def test_swin_shift_mask_builds_on_meta_and_refills() -> None:
    from archcomp.nn.positional import SwinShiftMask

    m = SwinShiftMask(6, 6, 3, 1, device="meta")
    assert m.mask.is_meta
    m.to_empty(device="cpu")
    m.reset_parameters()
    assert torch.equal(m.mask, _hf_shift_mask(6, 6, 3, 1))
