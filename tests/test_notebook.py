"""archcomp in a notebook, executed headless with nbclient: what each cell shows."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent

CELLS = [
    "import os\nos.environ['ARCHCOMP_PROGRESS_DELAY'] = '0'\nimport archcomp",
    "archcomp.summary('specs/transformer.yaml', {'N': 2, 'd_model': 64, 'd_ff': 128, "
    "'h': 4, 'vocab': 100})",
    "archcomp.check('specs/mlp.yaml')",
    "archcomp.draw('specs/mlp.yaml')",
    "model = archcomp.build('specs/lenet5.yaml', seed=0)",
    "model",
]


@pytest.mark.skipif(shutil.which("dot") is None, reason="the diagram cell needs Graphviz")
def test_notebook_shows_html_summary_svg_diagram_and_one_progress_line(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    client = NotebookClient(
        nb,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
        extra_arguments=[],
    )
    client.kernel_manager_class = _manager(sys.executable)
    client.execute()
    outputs = [cell.outputs for cell in nb.cells]
    for cell_outputs in outputs:
        assert all(o.output_type != "error" for o in cell_outputs), cell_outputs
        assert not any("Traceback" in str(o) for o in cell_outputs)
    summary = outputs[1][0]["data"]
    assert summary["text/html"].startswith('<table class="archcomp-summary">')
    assert "2x encoder_layer" in summary["text/html"]
    graph = outputs[2][0]["data"]["text/plain"]
    assert graph == "Graph('mlp': 3 nodes; inputs x [B, 10] float32; outputs y [B, 2])"
    # A checked spec and a built model show the interactive view (archcomp.view) in place.
    for shown in (outputs[2][0]["data"], outputs[5][0]["data"]):
        assert shown["text/html"].startswith('<iframe srcdoc="&lt;!DOCTYPE html&gt;')
        assert "archcomp-data" in shown["text/html"]
    diagram = outputs[3][0]["data"]
    assert "<svg" in diagram["image/svg+xml"]
    # Progress is one line replaced in place (update_display_data), not a stream of lines.
    assert [o.output_type for o in outputs[4]] == ["display_data"]
    line = outputs[4][0]["data"]["text/plain"]
    assert line.startswith("allocating and initialising weights: 100%"), line
    assert "<progress" in outputs[4][0]["data"]["text/html"]


def _manager(python: str) -> type:
    from jupyter_client.manager import KernelManager

    class VenvKernel(KernelManager):
        """The python3 kernel, started with the interpreter running the tests."""

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd = super().format_kernel_cmd(extra_arguments)
            return [python, *cmd[1:]]

    return VenvKernel


def test_draw_without_graphviz_raises_archcomps_error_with_the_hint(
    monkeypatch, tmp_path: Path
) -> None:
    import archcomp
    from archcomp.backends.graphviz import RenderError

    monkeypatch.setenv("PATH", "/nonexistent")
    diagram = archcomp.draw(ROOT / "specs" / "mlp.yaml")
    assert diagram.source.startswith("digraph")  # the DOT text needs no Graphviz
    with pytest.raises(RenderError, match="sudo apt-get install graphviz") as exc:
        diagram._repr_mimebundle_()  # what a notebook calls to show it
    assert exc.value.missing and exc.value.__cause__ is None
    with pytest.raises(RenderError, match="not installed"):
        diagram.render(tmp_path / "x")


def test_reprs_are_one_line() -> None:
    import archcomp
    from archcomp.frontend.build import load_source

    g = archcomp.check(ROOT / "specs" / "gpt3.yaml")
    assert (
        repr(g) == "Graph('gpt3': 965 nodes; inputs ids [B, T] int64; outputs logits [B, T, 50257])"
    )
    assert (
        repr(g.nodes["h_.3.attn"]) == "Node('h_.3.attn', multi_head_attention, out [B, T, 12288])"
    )
    assert (
        repr(g.nodes["wte"].origin)
        == "Origin('" + str(ROOT / "specs" / "gpt3.yaml") + "', ('nodes', 0))"
    )
    prog = load_source(ROOT / "specs" / "transformer.yaml")
    for obj in (prog, prog.spec, prog.doc):
        assert "\n" not in repr(obj) and len(repr(obj)) < 200, repr(obj)
    assert str(prog.spec) == repr(prog.spec)
