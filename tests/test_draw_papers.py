"""Figures that end and pool as the papers draw them: the Transformer's Softmax and "Output
Probabilities" (a spec's ``figure:`` declaration, drawing only), CLIP's normalised embeddings
and [EOS] features as one box each, ViT's MLP Head reading token 0."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archcomp
from archcomp.backends.graphviz import DrawOptions, plan
from archcomp.backends.graphviz.boxes import DEPTH_ALL
from archcomp.base.errors import SpecError
from archcomp.passes.pipeline import load_graph

ROOT = Path(__file__).resolve().parent.parent

HEAD = """
archcomp: 1
name: head
inputs: {x: [B, 4]}
nodes:
  - {id: generator, op: linear, out_features: 3}
outputs: {logits: generator}
"""


def _chain(d: object, start: str) -> list[str]:
    """The labels along the one edge out of each box from ``start`` to an output."""
    out = {e.src: e.dst for e in d.edges}  # type: ignore[attr-defined]
    labels, box = [], start
    while box in out:
        box = out[box]
        labels.append(d.boxes[box].label)  # type: ignore[attr-defined]
    return labels


def test_a_declared_output_figure_ends_with_softmax_and_output_probabilities() -> None:
    """``figure: {outputs: {logits: probabilities}}``: Linear -> Softmax -> Output
    Probabilities in the figure; the model still returns the logits (no softmax)."""
    spec = HEAD + "figure: {outputs: {logits: probabilities}}\n"
    d = plan(load_graph(spec), DrawOptions())
    assert _chain(d, "generator") == ["Softmax", "Output Probabilities"]
    assert _chain(plan(load_graph(HEAD), DrawOptions()), "generator") == ["logits"]
    model = archcomp.build(spec)
    x = torch.randn(2, 4)
    assert torch.equal(
        model(x), torch.nn.functional.linear(x, model.generator.weight, model.generator.bias)
    )


def test_the_transformer_ends_as_figure_1() -> None:
    g = load_graph(
        ROOT / "specs" / "transformer.yaml",
        params={"N": 1, "d_model": 16, "d_ff": 16, "h": 2, "vocab": 8},
    )
    assert _chain(plan(g, DrawOptions()), "generator") == ["Softmax", "Output Probabilities"]
    assert list(g.outputs) == ["logits"]


@pytest.mark.parametrize(
    ("figure", "message"),
    [
        ("{outputs: {probs: probabilities}}", "'probs' is not an output of the model"),
        ("{outputs: {logits: histogram}}", "probabilities"),
        ("{colour: red}", "colour"),
    ],
)
def test_a_bad_figure_declaration_is_a_located_error(figure: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        load_graph(HEAD + f"figure: {figure}\n")
    assert ":8:" in str(err.value)  # the line of figure:


SMALL_CLIP = {
    "N_text": 1,
    "N_vision": 1,
    "d_text": 16,
    "d_vision": 16,
    "h_text": 2,
    "h_vision": 2,
    "d_ff_text": 16,
    "d_ff_vision": 16,
    "projection": 8,
    "vocab": 64,
    "context": 8,
    "image": 32,
    "patch": 16,
}


def test_clip_reads_as_its_figure() -> None:
    """The L2 norm and the [EOS] pooling are one box each (blocks of ops), no Pow, Sum,
    Gather or Index boxes; ``--depth all`` draws them."""
    g = load_graph(ROOT / "specs" / "clip_vit_b32.yaml", params=SMALL_CLIP)
    labels = [b.label for b in plan(g, DrawOptions()).boxes.values()]
    assert labels.count("L2 Normalize") == 2 and "[EOS] Features" in labels
    assert not {"Pow", "Sum", "Gather", "Index"} & set(labels)
    assert _chain(plan(g, DrawOptions()), "text_projection")[0] == "L2 Normalize"
    every = {b.label for b in plan(g, DrawOptions(depth=DEPTH_ALL)).boxes.values()}
    assert {"Pow", "Sum", "Gather"} <= every


def test_vit_head_reads_token_0_and_a_last_time_step_stays() -> None:
    """ViT: LayerNorm -> Classifier Head, no [CLS] pick box (``--depth all`` draws it); the
    LSTM classifier's Last Time Step, and a [CLS] pick that feeds no head, stay drawn."""
    g = load_graph(ROOT / "specs" / "vit_b16.yaml", params={"N": 1, "d_model": 32, "h": 2})
    d = plan(g, DrawOptions())
    assert "[CLS]" not in {b.label for b in d.boxes.values()}
    assert ("ln", "head") in {(e.src, e.dst) for e in d.edges}
    assert "[CLS]" in {b.label for b in plan(g, DrawOptions(depth=DEPTH_ALL)).boxes.values()}
    lstm = plan(load_graph(ROOT / "specs" / "lstm_classifier.yaml"), DrawOptions())
    assert "Last Time Step" in {b.label for b in lstm.boxes.values()}
    clip = plan(load_graph(ROOT / "specs" / "clip_vit_b32.yaml", params=SMALL_CLIP), DrawOptions())
    assert "[CLS]" in {b.label for b in clip.boxes.values()}  # read by a norm, not a head


def test_mamba_draws_its_mixer_open_as_figure_3(tmp_path: Path) -> None:
    """``figure: {open: true}`` on the mamba_mixer block: the default figure shows its
    projections, causal conv, SiLU, SSM gated by SiLU(z) and output Linear, not one "Mamba
    Mixer" box; ``--depth 1`` still closes it, and without the declaration it is one box."""
    small = {"N": 1, "d_model": 8, "vocab": 16, "dt_rank": 2, "d_state": 2}
    g = load_graph(ROOT / "specs" / "mamba.yaml", params=small)
    labels = [b.label for b in plan(g, DrawOptions()).boxes.values()]
    assert "Mamba Mixer" not in labels
    assert {"SSM", "Conv", "SiLU", "×"} <= set(labels) and labels.count("Linear") >= 4
    assert "SSM" not in {b.label for b in plan(g, DrawOptions(depth=1)).boxes.values()}
    blocks = (ROOT / "specs" / "blocks" / "mamba.yaml").read_text()
    (tmp_path / "blocks.yaml").write_text(
        blocks.replace("figure: {open: true}", "figure: {open: false}")
    )
    model = (ROOT / "specs" / "mamba.yaml").read_text()
    imports = "imports: [{library: mamba, blocks: [mamba_block]}]"
    (tmp_path / "m.yaml").write_text(model.replace(imports, "imports: [blocks.yaml]"))
    plain = load_graph(tmp_path / "m.yaml", params=small)
    closed = [b.label for b in plan(plain, DrawOptions()).boxes.values()]
    assert "Mamba Mixer" in closed and "SSM" not in closed
