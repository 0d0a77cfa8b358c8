"""Stage columns (ResNet, ConvNeXt, Swin): the link between columns and the residuals into a
stage run outside every frame they do not belong to, and the stages read "×2" as the papers
write them. The layout checks read where Graphviz put each edge (``dot -Tjson``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from archcomp.backends.graphviz import DrawOptions, draw, plan
from archcomp.frontend.build import load_source
from archcomp.passes.pipeline import load_graph

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
needs_dot = pytest.mark.skipif(not shutil.which("dot"), reason="Graphviz's dot is not installed")


def _points(pos: str) -> list[tuple[float, float]]:
    """An edge's spline control points from its ``pos`` (``e,x,y`` / ``s,x,y``: arrow ends)."""
    out = []
    for tok in pos.split():
        x, y = tok.removeprefix("e,").removeprefix("s,").split(",")
        out.append((float(x), float(y)))
    return out


def frame_crossings(source: str) -> list[tuple[str, str, str]]:
    """(tail, head, frame) for each drawn edge whose spline passes inside a drawn frame that
    holds neither of its ends."""
    out = subprocess.run(["dot", "-Tjson"], input=source.encode(), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    layout = json.loads(out.stdout)
    objects = layout["objects"]
    frames = [
        o
        for o in objects
        if o.get("name", "").startswith("cluster") and o.get("peripheries", "1") != "0"
    ]
    bad = []
    for e in layout.get("edges", []):
        if e.get("style") == "invis" or "pos" not in e:
            continue
        for f in frames:
            members = set(f.get("nodes", []))
            if e["tail"] in members or e["head"] in members:
                continue
            x0, y0, x1, y1 = map(float, f["bb"].split(","))
            if any(x0 + 1 < x < x1 - 1 and y0 + 1 < y < y1 - 1 for x, y in _points(e["pos"])):
                bad.append((objects[e["tail"]]["name"], objects[e["head"]]["name"], f["label"]))
    return bad


def _shipped() -> list[Path]:
    """Every model spec that ships (block libraries have no nodes)."""
    return [p for p in sorted(SPECS.glob("*.yaml")) if load_source(p).spec.nodes]


@needs_dot
@pytest.mark.parametrize("spec", _shipped(), ids=lambda p: p.stem)
def test_no_edge_crosses_a_frame_it_is_not_in(spec: Path) -> None:
    """No shipped figure has an edge inside a frame that holds neither of its ends: in the
    stage columns (ResNet, ConvNeXt, Swin) the link from one column's top to the next
    column's foot runs down the gutter between them, not inside the next column's frame
    (issue 28)."""
    assert frame_crossings(draw(spec).source) == []


def test_the_link_between_columns_is_outside_every_frame() -> None:
    """Each link's points (gutter top and foot, joint) belong to no frame: the edge from a
    column's top leaves it beside the top box, and a stage's input enters its frame once, at
    a fork inside it, which feeds the sub-layer and the residual."""
    d = plan(load_graph(SPECS / "swin_tiny.yaml"), DrawOptions())
    links = [e for e in d.edges if e.kind == "link"]
    points = {b for e in links for b in (e.src, e.dst) if b.startswith(("gutter/", "joint/"))}
    assert len(points) == 9  # three links: top, foot, joint each
    assert all(d.boxes[b].frame is None for b in points)
    assert ("stage1.downsample", "gutter/top/1") in d.same_rank
    fork = d.boxes["fork/joint/1"]
    assert fork.frame is not None and d.frames[fork.frame].label == "copy 0"
    fed = {e.dst for e in d.edges if e.src == fork.id}
    assert fed == {"stage2.blocks.0.layernorm_before", "stage2.blocks.0.res_1"}


def test_convnext_residuals_fork_inside_the_stage_frame() -> None:
    """ConvNeXt's Downsample feeds the block and its residual through one edge into the
    repeat frame, not a residual arrow around the frame into its "+"."""
    d = plan(load_graph(SPECS / "convnext_tiny.yaml"), DrawOptions())
    into = [e for e in d.edges if e.src == "stage2.downsampling_layer"]
    assert [e.dst for e in into] == ["fork/stage2.downsampling_layer"]
    assert d.frames[d.boxes["fork/stage2.downsampling_layer"].frame].kind == "repeat"


def test_stage_frames_read_times_count_as_the_papers() -> None:
    """Swin's Figure 3 labels its stages "×2", "×2", "×6", "×2", not "depth× (depth = 2)";
    figures without stage columns keep the Transformer's "N× (N = 6)"."""
    swin = draw(SPECS / "swin_tiny.yaml").source
    assert swin.count("label=<×2>") == 3 and swin.count("label=<×6>") == 1
    assert "depth×" not in swin
    assert "label=<×3>" in draw(SPECS / "convnext_tiny.yaml").source
    assert "label=<N× (N = 6)>" in draw(SPECS / "transformer.yaml").source


@needs_dot
@pytest.mark.parametrize("name", ["llama", "qwen3", "transformer"])
def test_expanded_attention_crosses_no_frame(name: str) -> None:
    """Figure 2 inside a layer (``--expand multi_head_attention``): grouped-query attention's
    key/value projections stand on the rank of the query projection, so the value's edge
    does not loop through the query heads' frame (Llama's did)."""
    d = draw(SPECS / f"{name}.yaml", expand=["multi_head_attention"])
    assert frame_crossings(d.source) == []
