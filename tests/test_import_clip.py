"""CLIPModel through ``archcomp import --hf`` and ``archcomp convert --spec``: its two towers
(the vision tower's class token a bare parameter, the text tower's causal mask given to an
attention that is not causal itself), the pooling at each text's end-of-text token (the
largest id for ``eos_token_id: 2``, else the first ``eos_token_id``), the L2 normalisation,
``logit_scale.exp()``, and texts and images batched apart (``N`` and ``B``). Logits, embeddings
and every gradient equal transformers' (tests/NUMERICS.md tolerances)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import Case, check_case
from hf_models import quiet
from import_checks import cli_round_trip
from lowering import redraw
from numerics import RoundingChains, assert_close

import archcomp
from archcomp.importer import ImportFailure

transformers = pytest.importorskip("transformers")

OUTPUTS = ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds")


def _clip(tmp_path: Path, eos_token_id: int) -> tuple[Any, Path]:
    """A tiny CLIPModel (9 image tokens, texts up to 12), every weight re-drawn, saved."""
    quiet()
    tiny = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2}
    config = transformers.CLIPConfig(
        text_config={
            **tiny,
            "num_attention_heads": 4,
            "vocab_size": 61,
            "max_position_embeddings": 12,
            "eos_token_id": eos_token_id,
            "bos_token_id": 0,
            "pad_token_id": 1,
        },
        vision_config={**tiny, "num_attention_heads": 2, "image_size": 12, "patch_size": 4},
        projection_dim=8,
        architectures=["CLIPModel"],
    )
    model = transformers.CLIPModel(config)
    redraw(model, 5)
    with torch.no_grad():
        model.logit_scale.fill_(1.3)  # redraw's N(0, 0.5): a scale that checks exp
    folder = tmp_path / "clip"
    model.save_pretrained(folder)
    return model.eval(), folder


def _inputs(eos_token_id: int) -> dict[str, torch.Tensor]:
    """4 texts of 7 tokens, each with one eos_token_id at its own place, and 3 images."""
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(3, 59, (4, 7), generator=gen)
    ids[torch.arange(4), torch.tensor([6, 2, 4, 0])] = 60 if eos_token_id == 2 else eos_token_id
    return {"input_ids": ids, "pixel_values": torch.randn(3, 3, 12, 12, generator=gen)}


@pytest.mark.parametrize("eos_token_id", [2, 59])
def test_clip_round_trip_from_the_cli(tmp_path: Path, eos_token_id: int) -> None:
    ref, folder = _clip(tmp_path, eos_token_id)
    text, model = cli_round_trip(tmp_path, folder)
    assert (
        "  input_ids: {shape: [N, T], dtype: int64}\n  pixel_values: {shape: [B, 3, 12, 12]}"
        in text
    )
    assert "op: multi_head_attention, num_heads: 4, causal: true}" in text  # the text tower
    assert "- {id: class_embedding, op: parameter, shape: [16], key: self}" in text
    assert text.count("- {id: activation_fn, op: quick_gelu}") == 2  # each tower's MLP
    assert "- {id: logit_scale, op: parameter, shape: [], key: self}" in text
    pooled = (
        "- {id: eos_rows, op: expand, shape: [-1, -1, 16]}\n"
        "      - {id: eos_states, op: gather, in: {x: final_layer_norm, index: eos_rows}, dim: 1}"
    )
    assert pooled in text
    picks = "cast, op: cast, in: input_ids, dtype: int32}\n      - {id: argmax, op: argmax"
    assert (picks in text) == (eos_token_id == 2)  # else the first eos_token_id: eq, cast
    assert "op: eq, scalar: 59}" in text if eos_token_id != 2 else "op: eq" not in text
    inputs = _inputs(eos_token_id)
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(**inputs), ref(**inputs)
    for name in OUTPUTS:
        tol = chains.tolerance(torch.float32, got[name], getattr(want, name))
        assert_close(got[name], getattr(want, name), tol, msg=name)
    assert got["logits_per_image"].shape == (3, 4)  # B images by N texts

    built = archcomp.build(text).eval()
    built.load_state_dict(ref.state_dict(), strict=True)
    names = list(inputs)

    def forward(*xs: torch.Tensor) -> list[torch.Tensor]:
        out = ref(**dict(zip(names, xs, strict=True)))  # the spec's outputs, in its order
        text, vision = out.text_model_output, out.vision_model_output
        heads = [getattr(out, name) for name in OUTPUTS]
        return [*heads, *text.to_tuple()[:2], *vision.to_tuple()[:2]]

    grads = {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in built.named_parameters()}
    check_case(Case(built, ref, tuple(inputs.values()), forward, grads))


class _TwoPicks(torch.nn.Module):
    """Self-attention (traced with torch.export: nn.MultiheadAttention), then ``h[i, i]``."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(4, 1, batch_first=True)

    def forward(self, x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        h = self.attn(x, x, x, need_weights=False)[0]
        return h[i, i]  # (N, 4)


def test_an_index_by_other_tensors_is_refused_with_its_line() -> None:
    """Only x[arange(N), positions] is the EOS pooling: a pick by two positions is refused by
    name, with its source line."""
    example = (torch.randn(3, 5, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ImportFailure) as e:
        archcomp.import_module(_TwoPicks(), example)
    (problem,) = e.value.problems
    assert problem.startswith("aten.index.Tensor (indexing by tensors other than x[arange(N)")
    assert problem.endswith("return h[i, i]  # (N, 4)")
