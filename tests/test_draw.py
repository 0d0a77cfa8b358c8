"""The diagram backend: golden DOT files, the structure of the drawing, rendering through the
real ``dot``, escaping of hostile labels, and the CLI's behaviour without Graphviz.

Rewrite the golden files with ``ARCHCOMP_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_draw.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
from itertools import pairwise
from pathlib import Path

import graphviz
import pytest

import archcomp
from archcomp.backends.graphviz import DrawOptions, RenderError, draw, plan, read_stamp, save
from archcomp.backends.graphviz import render as render_mod
from archcomp.backends.graphviz.boxes import DEPTH_ALL
from archcomp.backends.graphviz.counts import param_counts
from archcomp.base.errors import UsageError
from archcomp.cli import main
from archcomp.passes.pipeline import load_graph

ROOT = Path(__file__).resolve().parent.parent
DRAW_SPECS = ROOT / "tests" / "specs" / "draw"
GOLDEN = ROOT / "tests" / "golden"
TRANSFORMER = DRAW_SPECS / "transformer.yaml"
LENET = DRAW_SPECS / "lenet5.yaml"
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed")

MHA = ("multi_head_attention", "scaled_dot_product_attention")


@pytest.fixture
def golden():
    """Compare text with a golden file; ARCHCOMP_UPDATE_GOLDEN=1 rewrites it instead."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if os.environ.get("ARCHCOMP_UPDATE_GOLDEN") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        assert path.exists(), f"{path} is missing: run with ARCHCOMP_UPDATE_GOLDEN=1"
        assert text == path.read_text(), f"{name} differs: ARCHCOMP_UPDATE_GOLDEN=1 rewrites it"

    return check


# -- golden DOT ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("golden_name", "spec", "expand"),
    [
        ("transformer.dot", TRANSFORMER, ()),
        ("transformer_attention.dot", TRANSFORMER, MHA),
        ("lenet5.dot", LENET, ()),
    ],
)
def test_golden_dot(golden, golden_name: str, spec: Path, expand: tuple[str, ...]) -> None:
    golden(golden_name, draw(spec, expand=expand).source)


def test_same_spec_gives_byte_identical_dot() -> None:
    a = draw(TRANSFORMER, expand=MHA, shapes=True, param_counts=True).source
    b = draw(TRANSFORMER, expand=MHA, shapes=True, param_counts=True).source
    assert a == b


# -- structure ----------------------------------------------------------------------------


def _plan(spec: Path | str, **kw: object):
    return plan(load_graph(spec), DrawOptions(**kw))  # type: ignore[arg-type]


def test_transformer_figure_1_structure() -> None:
    d = _plan(TRANSFORMER)
    assert d.direction == "BT"
    repeats = [f for f in d.frames.values() if f.kind == "repeat"]
    assert [f.label for f in repeats] == ["N× (N = 6)", "N× (N = 6)"]
    labels = sorted(b.label for b in d.boxes.values())
    assert labels.count("Add & Norm") == 5
    assert labels.count("Feed Forward") == 2
    assert "Masked Multi-Head Attention" in labels
    assert {"Inputs", "Outputs (shifted right)", "Output Probabilities"} <= set(labels)
    # Only copy 0 of each repeated layer is drawn.
    assert not any(".1." in b for b in d.boxes)
    # The encoder's output enters the decoder's cross-attention (as key and value).
    cross = [e for e in d.edges if e.src == "encoder.0.norm2" and e.dst == "decoder.0.cross_attn"]
    assert len(cross) == 2 and all(e.kind == "cross" for e in cross)
    # Residual connections bypass the sub-layer into its Add & Norm.
    # The embedding enters the "N×" frame once and forks inside it (the paper's one line).
    residual = {(e.src, e.dst) for e in d.edges if e.kind == "residual"}
    assert [e.dst for e in d.edges if e.src == "src_pos"] == ["fork/src_pos"]
    assert d.frames[d.boxes["fork/src_pos"].frame].kind == "repeat"
    assert ("fork/src_pos", "encoder.0.norm1") in residual
    assert ("encoder.0.norm1", "encoder.0.norm2") in residual
    assert ("decoder.0.norm2", "decoder.0.norm3") in residual
    # Positional encoding: a circled sine wave joined by a circled plus to the embedding.
    assert d.boxes["src_pos/wave"].label == "∿" and d.boxes["src_pos"].label == "+"
    assert {("src_embed", "src_pos"), ("src_pos/wave", "src_pos")} <= {
        (e.src, e.dst) for e in d.edges
    }
    # The final layer's output leaves the frame to the generator.
    assert any(e.src == "decoder.0.norm3" and e.dst == "generator" for e in d.edges)
    # Colours come from the families.
    assert d.boxes["encoder.0.attn"].family == "attention"
    assert d.boxes["encoder.0.norm1"].family == "addnorm"
    assert d.boxes["encoder.0.ff"].family == "feedforward"
    assert d.boxes["src_embed"].family == "embedding"


def test_dot_source_flows_bottom_to_top_with_frames() -> None:
    src = draw(TRANSFORMER).source
    assert "rankdir=BT" in src
    assert src.count("label=<N× (N = 6)>") == 2
    assert 'fillcolor="#fcd9b0"' in src  # attention: light orange
    assert '"encoder.0.norm2" -> "decoder.0.cross_attn" [constraint=false]' in src


def test_literal_repeat_count_frame(spec_file) -> None:
    p = spec_file(
        """archcomp: 1
name: stack
inputs: {x: [B, 4]}
blocks:
  layer:
    inputs: [x]
    nodes:
      - {id: fc, op: linear, out_features: 4}
      - {id: act, op: relu}
    outputs: act
nodes:
  - {id: body, op: layer, repeat: 3}
outputs: {y: body}
"""
    )
    d = _plan(p)
    assert [f.label for f in d.frames.values() if f.kind == "repeat"] == ["3×"]
    # A repeated leaf block is drawn open inside its frame; the chain between copies is not.
    assert {"body.0.fc", "body.0.act"} <= set(d.boxes)
    assert not any(e.src == "body.0.act" and e.dst == "body.0.fc" for e in d.edges)
    assert ("input/x", "body.0.fc") in {(e.src, e.dst) for e in d.edges}
    assert ("body.0.act", "output/y") in {(e.src, e.dst) for e in d.edges}


def test_expanded_attention_is_figure_2() -> None:
    d = _plan(TRANSFORMER, expand=MHA)
    stack = [f for f in d.frames.values() if f.kind == "stack"]
    assert len(stack) == 3 and all(f.label == "h× (h = 8)" for f in stack)
    inside = sorted(b.label for b in d.boxes.values() if b.id.startswith("encoder.0.attn/"))
    # The encoder's self-attention takes no mask: no mask box (the decoder's says causal).
    assert inside == sorted(["Linear"] * 4 + ["Concat", "MatMul", "Scale", "SoftMax", "MatMul"])
    masked = {b.label for b in d.boxes.values() if b.id.startswith("decoder.0.self_attn/")}
    assert "Causal Mask" in masked and "Mask (opt.)" not in masked
    edges = {(e.src, e.dst) for e in d.edges}
    # Query, key and value each enter their own linear projection.
    assert {
        ("fork/src_pos", "encoder.0.attn/linear_q"),
        ("fork/src_pos", "encoder.0.attn/linear_k"),
        ("fork/src_pos", "encoder.0.attn/linear_v"),
        ("encoder.0.norm2", "decoder.0.cross_attn/linear_k"),
        ("decoder.0.norm1", "decoder.0.cross_attn/linear_q"),
        ("encoder.0.attn/linear_out", "encoder.0.norm1"),
    } <= edges


GQA = """archcomp: 1
name: gqa
inputs: {x: [B, T, 16]}
nodes:
  - {id: attn, op: multi_head_attention, num_heads: 4, num_kv_heads: 2, causal: true,
     rope: {theta: 10000.0}, qk_norm: {kind: rms}, softcap: 50.0}
outputs: {y: attn}
"""


def test_attention_shows_its_heads_rope_qk_norm_and_soft_cap() -> None:
    """Llama/Gemma 2 attention: head counts, RoPE, q-k norm and the cap at every depth."""
    box = _plan(GQA).boxes["attn"]
    assert box.label == "Soft-Capped Masked Grouped-Query Attention"
    assert box.caption == "h = 4 query, 2 key/value heads · q-k norm · RoPE · soft-cap 50"
    d = _plan(GQA, depth=9)
    stack = {f.id: f.label for f in d.frames.values() if f.kind == "stack"}
    assert sorted(stack.values()) == ["2× (2 key/value heads)", "h× (h = 4 query heads)"]
    # Q's projection, norm and RoPE are per query head; K's and V's per key/value head.
    inner = {f.id: f.parent for f in d.frames.values()}
    assert {inner[d.boxes[f"attn/{p}_q"].frame] for p in ("linear", "norm", "rope")} == {
        k for k, v in stack.items() if v.startswith("h×")
    }
    assert {inner[d.boxes[f"attn/{p}"].frame] for p in ("linear_k", "rope_k", "linear_v")} == {
        k for k, v in stack.items() if v.startswith("2×")
    }
    edges = {(e.src, e.dst) for e in d.edges}
    for side, enters in (("q", "attn/attention/matmul1"), ("k", "attn/attention/matmul1")):
        assert {
            (f"attn/linear_{side}", f"attn/norm_{side}"),
            (f"attn/norm_{side}", f"attn/rope_{side}"),
            (f"attn/rope_{side}", enters),
        } <= edges
    chain = ["matmul1", "scale", "softcap", "mask", "softmax", "matmul2"]
    assert d.boxes["attn/attention/mask"].label == "Causal Mask"
    for a, b in pairwise(chain):
        assert (f"attn/attention/{a}", f"attn/attention/{b}") in edges


def test_a_mask_input_is_drawn_as_a_mask() -> None:
    spec = GQA.replace("inputs: {x: [B, T, 16]}", "inputs: {x: [B, T, 16], m: [B, 1, T, T]}")
    spec = spec.replace("causal: true,", "causal: false, in: {query: x, mask: m},")
    d = _plan(spec, depth=9)
    assert d.boxes["attn/attention/mask"].label == "Mask"
    assert "attn/attention/mask" in {e.dst for e in d.edges if e.src == "input/m"}


MOE = """archcomp: 1
name: moe
inputs: {x: [B, T, 8]}
nodes:
  - {id: moe, op: mixture_of_experts, num_experts: 4, top_k: 2, expert_features: 8,
     shared_features: 8}
outputs: {y: moe.out}
"""


def test_mixture_of_experts_is_router_k_of_e_experts_and_shared() -> None:
    d = _plan(MOE)
    labels = {b.id: b.label for b in d.boxes.values()}
    assert labels["moe/router"] == "Router" and labels["moe/select"] == "Softmax, Top-2"
    assert labels["moe/shared"] == "Shared Expert (SwiGLU)"
    stack = [f.label for f in d.frames.values() if f.kind == "stack"]
    assert stack == ["E× (2 of E = 4 experts per token)"]
    edges = {(e.src, e.dst) for e in d.edges}
    # The token enters the router, the experts and the shared expert; the sum leaves.
    assert {("input/x", f"moe/{p}") for p in ("router", "expert", "shared")} <= edges
    assert ("moe/combine", "output/y") in edges
    assert not any(e.label for e in d.edges)  # no "out": the Weighted Sum says it
    with pytest.raises(UsageError, match="already drawn open"):
        _plan(MOE, expand=("mixture_of_experts",))
    assert "moe/router" not in _plan(MOE, depth=0).boxes  # --depth still decides


def test_a_relative_bias_input_is_shown() -> None:
    """T5/Swin: a score_bias input is in the caption and, expanded, added after Scale."""
    spec = GQA.replace("inputs: {x: [B, T, 16]}", "inputs: {x: [B, 3, 16], b: [1, 4, 3, 3]}")
    spec = spec.replace("causal: true,", "in: {query: x, score_bias: b},")
    assert "relative bias" in _plan(spec).boxes["attn"].caption
    d = _plan(spec, depth=9)
    edges = {(e.src, e.dst) for e in d.edges}
    assert {
        ("input/b", "attn/attention/bias"),
        ("attn/attention/scale", "attn/attention/bias"),
    } <= edges


def test_expand_only_multi_head_attention_keeps_sdpa_a_box() -> None:
    d = _plan(TRANSFORMER, expand=("multi_head_attention",))
    assert d.boxes["encoder.0.attn/attention"].label == "Scaled Dot-Product Attention"
    assert "encoder.0.attn/attention/scale" not in d.boxes


def test_depth_collapses_and_expand_opens_blocks() -> None:
    d0 = _plan(TRANSFORMER, depth=0)
    assert d0.boxes["encoder.0"].label == "Encoder Layer"
    assert d0.boxes["encoder.0"].family == "attention"
    assert d0.boxes["encoder.0"].kind == "block"
    d = _plan(TRANSFORMER, expand=("feed_forward",))
    assert {"encoder.0.ff.fc1", "encoder.0.ff.act", "encoder.0.ff.fc2"} <= set(d.boxes)
    frames = [f for f in d.frames.values() if f.label == "Feed Forward"]
    assert len(frames) == 2 and all(f.kind == "block" for f in frames)
    deep = _plan(TRANSFORMER, depth=5)
    assert "encoder.0.attn/attention/softmax" in deep.boxes


def test_unknown_expand_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="did you mean 'feed_forward'"):
        _plan(TRANSFORMER, expand=("feed_forwrd",))


def test_expand_of_a_block_drawn_open_already_names_what_opens() -> None:
    """The encoder layer is a repeat, drawn open at every depth: --expand of it would write the
    same figure and say nothing, so it is an error naming the blocks and ops it could open."""
    with pytest.raises(UsageError, match="--expand encoder_layer: already drawn open") as e:
        _plan(TRANSFORMER, expand=("encoder_layer",))
    assert "opens here: add_norm, feed_forward, multi_head_attention" in str(e.value)
    with pytest.raises(UsageError, match="at this --depth; nothing is drawn closed here"):
        _plan(TRANSFORMER, depth=5, expand=("feed_forward",))
    with pytest.raises(UsageError, match="--expand encoder_layer"):  # the other one opens
        _plan(TRANSFORMER, expand=("encoder_layer", "feed_forward"))


def test_kernel_captions_say_the_kernel_rank() -> None:
    """Whisper's stem: a 1-D kernel of 3 is "kernel 3", not the 2-D "3×3"."""
    spec = """archcomp: 1
name: k
inputs: {x: [B, 80, 30], y: [B, 3, 8, 8]}
nodes:
  - {id: c1, op: conv1d, out_channels: 8, kernel_size: 3}
  - {id: p1, op: max_pool1d, kernel_size: 2}
  - {id: c2, op: conv2d, in: y, out_channels: 8, kernel_size: 3}
outputs: {a: p1, b: c2}
"""
    boxes = _plan(spec).boxes
    assert boxes["c1"].caption.startswith("kernel 3")
    assert boxes["p1"].caption.startswith("kernel 2")
    assert boxes["c2"].caption.startswith("3×3")


def test_shapes_and_param_counts() -> None:
    d = _plan(TRANSFORMER, shapes=True, param_counts=True)
    labels = {(e.src, e.dst): e.label for e in d.edges}
    assert labels[("src_embed", "src_pos")] == "[B, S, 512]"
    assert labels[("generator", "probs")] == "[B, T, 37000]"
    # 4 * (512 * 512 + 512) for the attention; 2 * 512 for the layer norm.
    assert d.boxes["encoder.0.attn"].note == "1.05M params"
    assert d.boxes["encoder.0.norm1"].note == "1.02K params"
    assert d.boxes["src_pos/wave"].note is None


def test_lenet_is_a_left_to_right_pipeline_with_feature_maps() -> None:
    d = _plan(LENET)
    assert d.direction == "LR"
    chain = [b for b in d.boxes.values() if b.kind == "op"]
    assert [b.label.split(" + ")[0] for b in chain] == [
        "C1",
        "S2",
        "C3",
        "S4",
        "C5",
        "F6",
        "OUTPUT",
    ]  # fmt: skip  (the paper has no Flatten: folded, drawn at --depth all)
    captions = [(b.caption or "").split("\n")[-1] for b in chain]
    assert captions == ["6@28×28", "6@14×14", "16@10×10", "16@5×5", "120@1×1", "84", "10"]
    assert "Flatten" in {b.label for b in _plan(LENET, depth=DEPTH_ALL).boxes.values()}


def test_lenet_strip_wraps_into_rows_within_three_to_one() -> None:
    """The strip reads left to right, cut into rows like text (at most ~3:1, not 20:1)."""
    d = _plan(LENET)
    assert [len(r) for r in d.rows] == [3, 3, 3]
    flat = [b for r in d.rows for b in r]
    assert flat[0] == "input/x" and flat[-1] == "output/logits" and len(flat) == len(d.boxes)
    assert "rankdir=TB" in draw(LENET).source


RESIDUAL_STAGES = """archcomp: 1
name: stages
inputs: {x: [B, 3, 8, 8]}
blocks:
  res:
    params: {c: {default: 4}}
    inputs: [x]
    nodes:
      - {id: conv, op: conv2d, out_channels: "${c}", kernel_size: 3, padding: 1}
      - {id: add, op: add, in: [conv, x]}
    outputs: add
nodes:
  - {id: stem, op: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - {id: s1, op: res, repeat: 2}
  - {id: s2, op: res, repeat: 2}
outputs: {y: s2}
"""


def test_residual_conv_stages_stack_upwards() -> None:
    """ResNet's stages: drawn bottom to top, each stage ranked above the one feeding it (an
    edge between them constrains the layout; not a side-by-side 'cross' edge)."""
    d = _plan(RESIDUAL_STAGES)
    assert d.direction == "BT" and not d.rows
    between = [e for e in d.edges if e.src.startswith("s1.") and e.dst.startswith("fork/s1.")]
    assert between and all(e.kind != "cross" for e in between)
    # The Transformer's encoder still stands beside the decoder it feeds.
    t = _plan(TRANSFORMER)
    assert any(e.kind == "cross" for e in t.edges if e.src.startswith("encoder."))


THREE_STAGES = """archcomp: 1
name: stages
inputs: {x: [B, 3, 8, 8]}
blocks:
  res:
    params: {odd: {default: 0}}
    inputs: [x]
    nodes:
      - {id: conv, op: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
      - {id: shifted, op: relu, when: "${odd == 1}"}
      - {id: add, op: add, in: [x, shifted]}
    outputs: add
nodes:
  - {id: stem, op: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - {id: s1, op: res, repeat: 2, odd: "${index % 2}"}
  - {id: s2, op: res, repeat: 4, odd: "${index % 2}"}
  - {id: s3, op: res, repeat: 2, odd: "${index % 2}"}
  - {id: head, op: relu}
outputs: {y: head}
"""


def test_three_or_more_stages_stand_side_by_side() -> None:
    """ResNet's, ConvNeXt's and Swin's stages: a column each, left to right, their feet on
    one rank; the link from one column's top runs down the gutter beside it to a joint at
    the next one's foot (not one 1:13 stack). tests/test_draw_columns.py checks the layout."""
    d = _plan(THREE_STAGES)
    assert d.columns == ["stem", "gutter/foot/1", "joint/1", "gutter/foot/2", "joint/2"]
    links = [(e.src, e.dst) for e in d.edges if e.kind == "link" and e.src.startswith("s")]
    assert ("s1.1.add", "gutter/top/1") in links and ("s2.1.add", "gutter/top/2") in links
    assert ("s1.1.add", "gutter/top/1") in d.same_rank  # the gutter's top beside the top box
    assert {e.dst for e in d.edges if e.src == "fork/joint/1"} == {"s2.0.conv", "s2.0.add"}
    assert d.boxes["head"].frame is None  # the head on the last column
    src = draw(THREE_STAGES).source
    assert '"gutter/foot/1" -> "gutter/top/1" [arrowhead=none]' in src
    assert 'stem -> "gutter/foot/1" [style=invis]' in src
    # Two stages still stack, one on the other.
    assert not _plan(RESIDUAL_STAGES).columns


def test_alternating_copies_are_drawn_once_per_period() -> None:
    """Swin's layers alternate (shifted windows every second one): a stage of 4 is drawn as
    its two kinds, "copies 0, 2" and "copies 1, 3", not 4 unrolled copies."""
    d = _plan(THREE_STAGES)
    runs = [f.label for f in d.frames.values() if f.id.startswith("run:s2")]
    assert runs == ["copies 0, 2 (2×)", "copies 1, 3 (2×)"]
    assert not any(b.startswith(("s2.2.", "s2.3.")) for b in d.boxes)
    # Edges, a fork (copy 0's sum entering copy 1's frame once) followed through to its ends.
    fork = {e.dst: e.src for e in d.edges if e.dst.startswith("fork/")}
    edges = [(fork.get(e.src, e.src), e.dst) for e in d.edges]
    inside = [(a, b) for a, b in edges if a[:3] == b[:3] == "s2."]
    assert ("s2.1.add", "s2.0.conv") not in inside  # copy 1 -> copy 2 is the frame, not an edge
    assert ("s2.0.add", "s2.1.conv") in inside


def test_vit_plumbing_folds_into_the_boxes_it_serves() -> None:
    """ViT's Flatten, Transpose, Expand and [CLS] Concat are not drawn: the patch embedding,
    the class token and the positions enter one +, as in the paper's figure."""
    g = load_graph(ROOT / "specs" / "vit_b16.yaml", params={"N": 1, "d_model": 32, "h": 2})
    d = plan(g, DrawOptions())
    labels = {b.label for b in d.boxes.values()}
    assert not labels & {"Flatten", "Transpose", "Expand", "Concat"}
    into = {e.src for e in d.edges if e.dst == "embedded"}
    assert into == {"conv_proj", "class_token", "pos_embedding"}
    full = plan(g, DrawOptions(depth=DEPTH_ALL))
    assert {"Flatten", "Transpose", "Expand", "Concat"} <= {b.label for b in full.boxes.values()}


SMALL_SWIN = {"image": 56, "width": 8, "h1": 1, "h2": 1, "h3": 1, "h4": 1, "classes": 4}
SWIN_PLUMBING = {"Window Partition", "Window Reverse", "Shift Mask", "Relative Position Bias"}


def test_swin_window_plumbing_folds_into_w_msa_and_sw_msa() -> None:
    """Swin's Figure 3b: LN, W-MSA (SW-MSA), +, LN, MLP, +. The window partition and reverse
    (blocks of only plumbing), the cyclic shifts (``roll``), the shift mask and the relative
    position bias (``Style.absorbed``) are folded into the attention box they serve, the
    bias table's parameters counted in its; ``--depth all`` draws them, and ``--expand
    window_partition`` opens that block to its reshapes."""
    g = load_graph(ROOT / "specs" / "swin_tiny.yaml", params=SMALL_SWIN)
    d = plan(g, DrawOptions(param_counts=True))
    labels = {b.label for b in d.boxes.values()}
    assert {"W-MSA", "SW-MSA"} <= labels
    assert d.boxes["input/pixel_values"].label == "Images"  # Figure 3a's word
    assert not labels & SWIN_PLUMBING and not any("shift" in x for x in labels)
    edges = {(e.src, e.dst) for e in d.edges}
    layer = "stage1.blocks.1"  # shifted windows
    assert d.boxes[f"{layer}.attention"].label == "SW-MSA"
    assert (f"{layer}.layernorm_before", f"{layer}.attention") in edges
    assert (f"{layer}.attention", f"{layer}.res_1") in edges
    weights = param_counts(g)
    attention = weights[f"{layer}.attention"] + weights[f"{layer}.relative_position_bias"]
    assert d.boxes[f"{layer}.attention"].params == attention
    every = plan(g, DrawOptions(depth=DEPTH_ALL))
    full = {b.label for b in every.boxes.values()} | {f.label for f in every.frames.values()}
    assert SWIN_PLUMBING | {"cyclic shift -3", "cyclic shift +3", "Permute"} <= full
    opened = plan(g, DrawOptions(expand=("window_partition",)))
    frame = next(f.id for f in opened.frames.values() if f.label == "Window Partition")
    inside = [b.label for b in opened.boxes.values() if b.frame == frame]
    assert inside == ["Reshape", "Permute", "Reshape"]
    with pytest.raises(UsageError, match="window_partition, window_reverse"):
        plan(g, DrawOptions(expand=("swin_stage",)))


def test_a_residual_around_a_frame_runs_beside_it() -> None:
    """Mixtral's residual around its mixture-of-experts figure leaves its + and enters the
    next from the side (beside the frame, not over its corner); the residual around the
    attention box, a single box, is drawn as before."""
    small = {"N": 1, "d_model": 64, "d_ff": 32, "vocab": 16}
    g = load_graph(ROOT / "specs" / "mixtral.yaml", params=small)
    d = plan(g, DrawOptions())
    side = {(e.src, e.dst) for e in d.edges if e.side}
    assert side == {("layers.0.res_1", "layers.0.res_2")}
    assert '"layers.0.res_1" -> "layers.0.res_2" [headport=e tailport=e]' in draw(g).source


def test_embeddings_summed_before_a_pre_norm_are_not_add_and_norm() -> None:
    """CLIP/BERT: tokens + positions, then the first LayerNorm: a plus and a norm (no
    residual), while x + sublayer(x) -> norm still is one Add & Norm."""
    spec = """archcomp: 1
name: emb
inputs: {ids: {shape: [B, T], dtype: int64}}
nodes:
  - {id: tok, op: embedding, num_embeddings: 10, embedding_dim: 8}
  - {id: pos, op: parameter, shape: [1, T, 8]}
  - {id: sum, op: add, in: [tok, pos]}
  - {id: ln, op: layer_norm}
  - {id: fc, op: linear, out_features: 8}
  - {id: res, op: add, in: [ln, fc]}
  - {id: ln2, op: layer_norm}
outputs: {y: ln2}
"""
    d = _plan(spec.replace("[1, T, 8]", "[1, 4, 8]").replace("[B, T]", "[B, 4]"))
    assert d.boxes["sum"].label == "+" and d.boxes["ln"].label == "Layer Norm"
    assert d.boxes["ln2"].label == "Add & Norm" and "res" not in d.boxes


def test_mamba_mixer_expanded_is_the_papers_figure() -> None:
    """Mamba's Figure 3: in-projection; conv, SiLU, SSM on one branch, SiLU on the other,
    multiplied, out-projection. The splits and transposes are folded (no 'out0' labels)."""
    params = {"N": 1, "d_model": 8, "vocab": 16, "dt_rank": 2, "d_state": 4}
    g = load_graph(ROOT / "specs" / "mamba.yaml", params=params)
    d = plan(g, DrawOptions())  # drawn open: the block declares figure: {open: true}
    mixer = {b.id: b for b in d.boxes.values() if ".mixer." in b.id}
    ssm = next(b for b in mixer.values() if b.label == "SSM")
    gate = next(b for b in mixer.values() if b.label == "SiLU" and b.kind == "part")
    mul = next(b for b in mixer.values() if b.label == "×")
    edges = {(e.src, e.dst) for e in d.edges}
    assert {(ssm.id, mul.id), (gate.id, mul.id)} <= edges
    in_proj = next(b.id for b in mixer.values() if b.id.endswith("in_proj"))
    assert (in_proj, gate.id) in edges  # z: the in-projection's second half, gated
    assert not {"Split", "Transpose", "Index"} & {b.label for b in mixer.values()}  # the crop too
    assert not any(e.label for e in d.edges if e.dst in mixer)


def test_recurrence_is_visible(spec_file) -> None:
    p = spec_file(
        """archcomp: 1
name: lstm_classifier
inputs: {x: [B, S, 10]}
nodes:
  - {id: lstm, op: lstm, hidden_size: 8, num_layers: 2}
  - {id: last, op: index, in: lstm.output, at: "[:, -1, :]", label: Last Time Step}
  - {id: fc, op: linear, out_features: 2}
outputs: {logits: fc}
"""
    )
    d = _plan(p)
    loops = [e for e in d.edges if e.kind == "loop"]
    assert [(e.src, e.dst, e.label) for e in loops] == [("lstm", "lstm", "h, c")]
    assert d.boxes["lstm"].caption == "2 layers"
    assert ("lstm", "last", "output") in {(e.src, e.dst, e.label) for e in d.edges}


def test_too_large_a_diagram_is_refused() -> None:
    with pytest.raises(UsageError, match=r"would have \d+ boxes \(limit 10\)"):
        _plan(TRANSFORMER, max_boxes=10)


# -- escaping -----------------------------------------------------------------------------

HOSTILE = [
    '"]; evil [label="pwned',
    "<b>bold</b> & <i>",
    "x\\ny \\N \\G \\L",
    "}} digraph { a -> b",
    "<<TABLE><TR><TD>t</TD></TR></TABLE>>",
]


def _hostile_spec(spec_file, label: str) -> Path:
    quoted = "'" + label.replace("'", "''") + "'"
    return spec_file(
        f"""archcomp: 1
name: hostile
inputs: {{x: [B, 4]}}
nodes:
  - {{id: fc, op: linear, out_features: 4, label: {quoted}}}
outputs: {{y: fc}}
"""
    )


@pytest.mark.parametrize("label", HOSTILE)
def test_hostile_labels_are_escaped(spec_file, label: str) -> None:
    src = draw(_hostile_spec(spec_file, label)).source
    node_lines = [ln for ln in src.splitlines() if ln.strip().startswith("fc [")]
    assert len(node_lines) == 1
    assert "evil" not in src.replace(_esc(label).replace("\\", "\\\\"), "")
    assert "<b>" not in src and "<TABLE>" not in src
    assert src.count("->") == 2  # input -> fc -> output, nothing injected


def _esc(text: str) -> str:
    import html

    return html.escape(text, quote=True)


@needs_dot
@pytest.mark.parametrize("label", HOSTILE)
def test_hostile_labels_render_as_plain_text(spec_file, tmp_path: Path, label: str) -> None:
    out = save(draw(_hostile_spec(spec_file, label)), tmp_path / "h.svg")
    root = ET.fromstring(out.read_text())
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert label in texts
    assert len(root.findall(".//{http://www.w3.org/2000/svg}g[@class='node']")) == 3


# -- rendering ----------------------------------------------------------------------------


@needs_dot
def test_renders_svg_and_png_through_dot(tmp_path: Path) -> None:
    diagram = draw(TRANSFORMER, expand=MHA)
    svg = save(diagram, tmp_path / "t.svg")
    png = save(diagram, tmp_path / "t.png")
    root = ET.fromstring(svg.read_text())
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"Multi-Head Attention", "Masked Multi-Head Attention", "N× (N = 6)"} <= texts
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    digest = render_mod.dot_hash(diagram.source)
    assert read_stamp(svg) == digest == read_stamp(png)
    assert save(diagram, tmp_path / "t.pdf").read_bytes()[:4] == b"%PDF"


def test_python_api_returns_a_notebook_ready_digraph() -> None:
    g = archcomp.draw(TRANSFORMER, {"N": 2}, expand=["multi_head_attention"])
    assert isinstance(g, graphviz.Digraph)
    assert hasattr(g, "_repr_mimebundle_")
    assert "N× (N = 2)" in g.source
    assert (
        archcomp.draw(load_graph(TRANSFORMER, {"N": 2}), expand=["multi_head_attention"]).source
        == g.source
    )


# -- command line -------------------------------------------------------------------------


@needs_dot
def test_cli_draws_png(tmp_path: Path, capsys) -> None:
    out = tmp_path / "t.png"
    assert main(["draw", str(TRANSFORMER), "-o", str(out), "--shapes", "--params"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {out}" in capsys.readouterr().out


def test_cli_default_output_is_diagrams_name_svg(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["draw", str(TRANSFORMER), "--format", "dot", "-p", "N=2"]) == 0
    text = (tmp_path / "diagrams" / "transformer.dot").read_text()
    assert "N× (N = 2)" in text


def test_cli_without_graphviz_writes_dot_and_says_how_to_install(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(render_mod, "find_dot", lambda: None)
    out = tmp_path / "t.svg"
    assert main(["draw", str(TRANSFORMER), "-o", str(out)]) == 4
    err = capsys.readouterr().err
    assert "apt-get install graphviz" in err and "Traceback" not in err
    assert not out.exists()
    assert (tmp_path / "t.dot").read_text().startswith("digraph transformer {")


@needs_dot
def test_cli_dot_time_limit(tmp_path: Path, capsys) -> None:
    out = tmp_path / "new" / "sub" / "t.svg"
    code = main(["draw", str(TRANSFORMER), "-o", str(out), "--timeout", "1e-6"])
    assert code == 4
    assert "time limit" in capsys.readouterr().err
    # only the DOT source, to lay out by hand; no SVG, nothing else
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")) == [
        "new/sub/t.dot"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--expand", "nope"], "--expand nope: no block"),
        (["--depth", "-1"], "argument --depth: must be >= 0"),
        (["--max-nodes", "5"], "limit 5"),
        (["-o", "x.gif"], "cannot tell the format"),
        (["-p", "M=3"], "M"),
    ],
)
def test_cli_usage_errors(argv: list[str], message: str, capsys) -> None:
    assert main(["draw", str(TRANSFORMER), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_spec_error_is_reported_not_raised(spec_file, capsys) -> None:
    p = spec_file(
        "archcomp: 1\nname: bad\ninputs: {x: [B, 4]}\nnodes:\n  - {id: a, op: nope}\n"
        "outputs: {y: a}\n"
    )
    assert main(["draw", str(p), "--format", "dot"]) == 1
    assert "unknown op 'nope'" in capsys.readouterr().err


# -- diagrams/ ----------------------------------------------------------------------------


def _model_specs() -> list[Path]:
    from archcomp.frontend.build import load_source

    return [p for p in sorted((ROOT / "specs").glob("*.yaml")) if load_source(p).spec.nodes]


@pytest.mark.parametrize("spec", _model_specs(), ids=lambda p: p.stem)
def test_checked_in_diagrams_are_up_to_date(spec: Path) -> None:
    diagram = draw(spec)
    digest = render_mod.dot_hash(diagram.source)
    for suffix in ("svg", "png"):
        path = ROOT / "diagrams" / f"{diagram.name}.{suffix}"
        assert path.exists(), f"{path} is missing: run scripts/diagrams.sh"
        assert read_stamp(path) == digest, (
            f"{path.relative_to(ROOT)} is out of date with {spec.relative_to(ROOT)}: "
            "run scripts/diagrams.sh"
        )


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


@pytest.mark.parametrize("spec", _model_specs(), ids=lambda p: p.stem)
def test_checked_in_diagrams_are_at_most_about_three_to_one(spec: Path) -> None:
    """No shipped figure is a strip or a tower: ResNet-50 was 1:13, Swin-T 1:12.5."""
    w, h = _png_size(ROOT / "diagrams" / f"{spec.stem}.png")
    assert max(w / h, h / w) <= 3.2, f"diagrams/{spec.stem}.png is {w} x {h}"


def test_model_specs_found() -> None:
    assert any(re.fullmatch(r"mlp", p.stem) for p in _model_specs())


def test_expand_flag_before_spec_and_comma_separated(tmp_path: Path) -> None:
    """`--expand NAME` takes one name per flag, so it may come before SPEC; commas list several."""
    spec = str(ROOT / "specs" / "transformer.yaml")
    first, second = tmp_path / "a.dot", tmp_path / "b.dot"
    assert main(["draw", "--expand", "multi_head_attention", spec, "-o", str(first)]) == 0
    assert (
        main(["draw", spec, "--expand", "feed_forward,multi_head_attention", "-o", str(second)])
        == 0
    )
    assert "Scaled Dot-Product Attention" in first.read_text()
    assert "Scaled Dot-Product Attention" in second.read_text()
    assert second.read_text() != first.read_text()  # feed_forward opened too


def test_format_conflicting_with_output_suffix_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "r.svg"
    spec = str(ROOT / "specs" / "mlp.yaml")
    assert main(["draw", spec, "-o", str(out), "--format", "png"]) == 2
    assert not out.exists()


# -- Graphviz limits --------------------------------------------------------------------


def _dense(spec_file, n: int, fan: int) -> Path:
    """n adds, each fed by ``fan`` earlier nodes spread over the graph: long edges."""
    lines = ["archcomp: 1", "name: dense", "inputs: {x: [B, 4]}", "nodes:"]
    lines += ["  - {id: n0, op: relu}", "  - {id: n1, op: relu}"]
    for i in range(2, n):
        srcs = sorted({0, i - 1, *((i * (j + 1)) // (fan + 1) for j in range(fan))})
        lines.append(f"  - {{id: n{i}, op: add, in: [{', '.join(f'n{s}' for s in srcs)}]}}")
    lines.append(f"  - {{id: out, op: add, in: [{', '.join(f'n{i}' for i in range(n))}]}}")
    return spec_file("\n".join([*lines, "outputs: out", ""]))


def test_edges_are_counted_by_the_ranks_they_cross(spec_file) -> None:
    from archcomp.backends.graphviz.counts import edge_segments

    d = plan(load_graph(_dense(spec_file, 40, 4)), DrawOptions())
    pairs = [(e.src, e.dst) for e in d.edges if e.src != e.dst]
    assert edge_segments(d) > 4 * len(pairs)  # far more segments than edges
    chain = plan(load_graph(TRANSFORMER), DrawOptions())
    assert edge_segments(chain) < 3 * len(chain.edges)


def test_a_dense_diagram_under_the_box_limit_is_refused_by_its_edges(spec_file) -> None:
    with pytest.raises(UsageError, match=r"edges crossing [\d,]+ ranks in all \(limit 10,000\)"):
        draw(_dense(spec_file, 300, 20))  # 302 boxes, far under --max-nodes


def test_cli_max_edges_and_limits_of_dot(spec_file, tmp_path: Path, capsys) -> None:
    spec = str(_dense(spec_file, 40, 4))
    assert main(["draw", spec, "-o", str(tmp_path / "d.dot"), "--max-edges", "50"]) == 2
    assert "raise --max-edges" in capsys.readouterr().err
    for flag, value, message in (
        ("--timeout", "nan", "the time limit must be a number of seconds"),
        ("--timeout", "inf", "at most 86400"),
        ("--timeout", "1e308", "at most 86400"),
        ("--max-memory", "1MB", "at least 64 MiB"),
    ):
        assert main(["draw", spec, "-o", str(tmp_path / "d.svg"), flag, value]) == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("d.*"))


@needs_dot
def test_dot_runs_under_a_memory_limit(tmp_path: Path) -> None:
    """Past its address-space limit dot fails cleanly; the limit is dot's, not ours."""
    wide = graphviz.Digraph("wide")
    for i in range(5000):
        wide.node(f"n{i}")
    with pytest.raises(RenderError, match=r"memory limit of 0\.1 GiB"):
        save(wide, tmp_path / "t.svg", memory=64 << 20)  # fails at once, not after seconds
    assert not (tmp_path / "t.svg").exists()
    assert save(draw(TRANSFORMER), tmp_path / "t.svg").exists()  # the default is ample


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200b", "\x9b", "\x1b", "\ufeff"])
def test_bidi_zero_width_and_control_characters_are_escaped(spec_file, char: str) -> None:
    label = f'"a\\u{ord(char):04x}b"'  # YAML reads the escape; the file itself stays plain
    spec = spec_file(
        "archcomp: 1\nname: h\ninputs: {x: [B, 4]}\n"
        f"nodes:\n  - {{id: fc, op: linear, out_features: 4, label: {label}}}\noutputs: fc\n"
    )
    src = draw(spec).source
    assert char not in src
    assert f"a\\\\u{ord(char):04x}b" in src or f"a\\\\x{ord(char):02x}b" in src
