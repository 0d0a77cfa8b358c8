"""`archcomp import --hf --attention-mask` of the Llama family: transformers' causal-and-padding
mask (``create_causal_mask``'s ``sdpa_mask``) traced with an example ``attention_mask`` and
imported as an ``attention_mask`` input whose ``eq 0`` is each attention's
``key_padding_mask`` beside ``causal: true``. Small random configs, every weight re-drawn, saved
with save_pretrained; right- and left-padded batches compared with transformers at the tokens
the mask keeps (a fully hidden query row, a left pad's, is arbitrary in both), forward and
gradients, to tests/NUMERICS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hf_models import quiet
from import_checks import SMALL, saved
from import_decoders import LLAMA_LIKE, deepseek
from import_decoders import saved as saved_class
from lowering import redraw
from numerics import RoundingChains, assert_close

import archcomp
from archcomp.cli.main import main
from archcomp.importer import ImportFailure
from archcomp.importer.hf import import_hf

transformers = pytest.importorskip("transformers")
T = 9


def padded(left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and a mask of two sequences of 6 and 3 tokens, padded after (right) or before
    (left) them; transformers' positions stay 0..T-1 either way (no position_ids given)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, SMALL["vocab_size"], (2, T), generator=g)
    mask = torch.ones(2, T, dtype=torch.int64)
    for b, n in enumerate((6, 3)):
        if left:
            mask[b, : T - n] = 0
        else:
            mask[b, n:] = 0
    return ids, mask


def kept_equal(model: Any, ref: Any, left: bool, grads: bool = False) -> None:
    """Logits (and, with ``grads``, every parameter's gradient of a weighted sum of them) equal
    to transformers' at the positions the mask keeps."""
    ids, mask = padded(left)
    keep = mask.bool()
    model.eval()
    with RoundingChains() as chains:
        got, want = model(input_ids=ids, attention_mask=mask), ref(ids, attention_mask=mask)
        got, want = got["logits"] if isinstance(got, dict) else got, want.logits
        assert_close(got[keep], want[keep], chains.tolerance(torch.float32, got, want))
        if left:  # the pads come first, so the mask tells (after a right pad, causal hides it)
            assert not torch.allclose(want[keep], ref(ids).logits[keep])
        if not grads:
            return
        w = torch.linspace(0.5, 1.5, got[keep].numel()).view_as(got[keep])
        (got[keep] * w).sum().backward()
        (want[keep] * w).sum().backward()
        for name, p in model.named_parameters():
            g, r = p.grad, ref.get_parameter(name).grad
            assert g is not None and r is not None, name
            assert torch.isfinite(g).all(), name
            assert_close(g, r, chains.tolerance(torch.float32, g, r))


def test_llama_padded_batches_round_trip_from_the_cli(tmp_path: Path) -> None:
    ref, folder = saved(tmp_path, "Llama")
    spec, art = tmp_path / "llama.yaml", tmp_path / "llama.safetensors"
    assert main(["import", "--hf", str(folder), "--attention-mask", "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    assert "attention_mask: {shape: [B, T], dtype: int64}" in text
    assert "- {id: padding_mask, op: eq, in: attention_mask, scalar: 0}" in text
    assert (
        "- {id: self_attn, op: multi_head_attention,\n"
        "         in: {query: input_layernorm, key_padding_mask: x_2}, "
        'num_heads: "${num_attention_heads}",\n'
        '         num_kv_heads: "${num_key_value_heads}", bias: false, causal: true,'
    ) in text
    built = archcomp.load(art)
    kept_equal(built, ref, left=False)
    kept_equal(built, ref, left=True)
    model = archcomp.build(text)  # gradients with transformers' own state_dict, strictly
    model.load_state_dict(ref.state_dict(), strict=True)
    kept_equal(model, ref, left=True, grads=True)


@pytest.mark.parametrize(
    ("family", "config"),
    [
        ("Mistral", {"sliding_window": 4}),
        ("Qwen2", {}),
        ("Qwen3", {"head_dim": 12}),
        ("Olmo2", {}),
        ("Phi3", {}),
        ("Gemma2", {"num_hidden_layers": 4, "sliding_window": 4, "head_dim": 8}),  # eager
        ("Mixtral", {"num_local_experts": 4}),
        ("GPTNeoX", {}),
        ("StableLm", {}),
        ("Granite", {"embedding_multiplier": 3.0}),
    ],
)
def test_llama_family_padded(tmp_path: Path, family: str, config: dict[str, Any]) -> None:
    """Mistral's sliding window (4 of 9 tokens) and Gemma 2's sliding and full layers (its
    eager attention adds ``where(mask, 0, min)`` to the scores: one padding mask for both)."""
    ref, folder = saved(tmp_path, family, **config)
    text = import_hf(folder, attention_mask=True)
    assert "key_padding_mask: x_2}" in text
    assert text.count("op: eq, in: attention_mask") == 1
    assert "causal: true" in text or family == "Gemma2"  # Gemma 2's causal is the default's
    model = archcomp.from_pretrained(folder, text)
    kept_equal(model, ref, left=False)
    kept_equal(model, ref, left=True, grads=True)


def test_without_the_flag_no_mask_is_traced(tmp_path: Path) -> None:
    _, folder = saved(tmp_path, "Llama", num_hidden_layers=1)
    assert "attention_mask" not in import_hf(folder)


def test_gpt2_padded(tmp_path: Path) -> None:
    """GPT-2's attention (c_attn split, Conv1D weights): the mask's port beside c_attn's input;
    wpe stays looked up at 0..T-1 (transformers derives no positions from the mask)."""
    quiet()
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=61, n_positions=16)
    ref = transformers.GPT2LMHeadModel(cfg)
    redraw(ref, 3)
    folder = tmp_path / "gpt2"
    ref.save_pretrained(folder)
    text = import_hf(folder, attention_mask=True)
    assert "in: {query: ln_1, key_padding_mask: x_2}" in text
    model = archcomp.from_pretrained(folder, text)
    kept_equal(model, ref.eval(), left=False)
    kept_equal(model, ref, left=True, grads=True)


def test_a_mask_read_otherwise_is_refused_with_its_line(tmp_path: Path) -> None:
    """DeepSeek-V3's latent attention (its op has no key_padding_mask port) with the traced
    padding mask: refused at each attention, with its line, never imported without the mask."""
    _, folder = deepseek(tmp_path)
    with pytest.raises(ImportFailure) as e:
        import_hf(folder, attention_mask=True)
    problems = e.value.problems
    for i in range(3):
        line = f"DeepseekV3Attention self.model.layers.{i}.self_attn (an attention mask computed"
        assert any(p.startswith(line) and " at " in p for p in problems), problems


def test_the_flag_needs_a_decoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quiet()
    cfg = transformers.T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=61)
    folder = tmp_path / "t5"
    transformers.T5ForConditionalGeneration(cfg).save_pretrained(folder)
    assert main(["import", "--hf", str(folder), "--attention-mask"]) == 2
    assert (
        "--attention-mask: T5ForConditionalGeneration is not a decoder" in capsys.readouterr().err
    )


def test_gemma3_padded(tmp_path: Path) -> None:
    """Gemma 3's sliding and full layers (another RoPE base and scaling on the full ones): one
    padding mask for both kinds, the layers one block."""
    rope = {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
    }
    ref, folder = saved_class(
        tmp_path, "Gemma3TextConfig", "Gemma3ForCausalLM", num_hidden_layers=4, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"] * 2, rope_parameters=rope,
        **LLAMA_LIKE,
    )  # fmt: skip
    text = import_hf(folder, attention_mask=True)
    assert text.count("op: eq, in: attention_mask") == 1 and "key_padding_mask: x_2}" in text
    model = archcomp.from_pretrained(folder, text)
    kept_equal(model, ref, left=False)
    kept_equal(model, ref, left=True, grads=True)


def test_a_softcapped_row_that_sees_no_key_is_zero_as_sdpas() -> None:
    """The written-out (soft-capped) attention gives 0 for a query row whose keys are all
    hidden, as torch's SDPA does, so no NaN reaches later layers or the gradients; the other
    rows as the cap written by hand."""
    from archcomp.nn.attention import attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=g, requires_grad=True) for _ in range(3))
    keep = torch.ones(1, 1, 4, 4, dtype=torch.bool).tril()
    keep[..., 0] = False  # key 0 hidden: query 0 sees no key
    out = attend(q, k, v, keep, False, 0.0, None, 50.0, False)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    scores = 50.0 * torch.tanh(q @ k.transpose(-1, -2) / 8**0.5 / 50.0)
    want = scores.masked_fill(~keep, float("-inf"))[..., 1:, :].softmax(-1) @ v
    assert torch.equal(out[..., 0, :], torch.zeros_like(out[..., 0, :]))
    assert torch.equal(sdpa[..., 0, :], out[..., 0, :])
    assert_close(out[..., 1:, :], want, RoundingChains().tolerance(torch.float32, out, want))
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v) if t.grad is not None)
