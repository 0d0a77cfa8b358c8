"""The interactive HTML view (``archcomp view``, ``draw --format html``, ``archcomp.view``):
what the page holds, that spec text cannot inject into it, and the CLI's errors. The page in
a real browser is tested in tests/test_view_browser.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import archcomp
from archcomp.backends.graphviz import render as render_mod
from archcomp.cli import main

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is missing")
pytestmark = needs_dot

HOSTILE = (
    "archcomp: 1\nname: evil\ninputs: {x: [B, 4]}\nnodes:\n"
    "  - {id: fc, op: linear, out_features: 2,\n"
    '     label: "</script><script>alert(1)</script><img src=x onerror=alert(2)> & \\u2028"}\n'
    "  - {id: r, op: relu, label: \"<!-- ${'$'}DATA -->\"}\n"
    "outputs: r\n"
)


def data_of(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="archcomp-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_page_is_one_offline_file_whose_spec_text_cannot_inject(tmp_path: Path) -> None:
    spec = tmp_path / "evil.yaml"
    spec.write_text(HOSTILE)
    page = archcomp.view(spec).html
    # Exactly our two script elements, no element or URL from the spec, nothing fetched.
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<img" not in page and "onerror=alert" not in page.replace("onerror=alert(2)", "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "default-src 'none'" in page  # the browser itself refuses any fetch
    data = data_of(page)
    labels = {v["title"] for v in data["info"].values()}
    assert "</script><script>alert(1)</script><img src=x onerror=alert(2)> & \u2028" in labels
    assert "<!-- $DATA -->" in labels  # the page's markers are not re-expanded
    for state in data["states"]:  # Graphviz's SVG carries the label escaped
        assert "<script" not in state["svg"] and "<img" not in state["svg"]


def test_states_open_each_closed_block_breadth_first_within_the_bound() -> None:
    g = archcomp.check("transformer", {"N": 2, "d_model": 32, "d_ff": 64, "h": 2, "vocab": 50})
    data = data_of(archcomp.view(g).html)
    keys = [s["key"] for s in data["states"]]
    assert keys[0] == [] and keys[-1] == ["*"]  # the first figure, and every block open
    first = data["states"][0]
    opens = {b["opens"] for b in first["boxes"].values()} - {None}
    assert opens == {"encoder_layer", "decoder_layer"}  # repeated layers start closed
    assert [[name] for name in sorted(opens)] == keys[1:3]  # one more open, breadth first
    small = data_of(archcomp.view(g, max_states=3).html)
    assert [s["key"] for s in small["states"]] == [[], ["decoder_layer"], ["*"]]
    assert small["truncated"] and small["limit"] == 3
    # Closing a frame leads to a held state without that name (the page's rule: the largest
    # held state within the rest), never to one missing.
    held = [set(k) for k in keys[:-1]]
    for s in data["states"][1:-1]:
        for f in s["frames"].values():
            for name in f["collapse"] or []:
                rest = set(s["key"]) - {name}
                assert any(k <= rest and name not in k for k in held)
    assert ["add_norm", "decoder_layer"] in keys  # opened inside an opened layer


REPEATED = (
    "archcomp: 1\nname: rep\ninputs: {x: [B, 4]}\nblocks:\n  lin:\n    inputs: [x]\n"
    "    nodes:\n      - {id: fc, op: linear, out_features: 4}\n      - {id: act, op: relu}\n"
    "    outputs: act\nnodes:\n  - {id: layers, op: lin, repeat: 3}\noutputs: {y: layers}\n"
)


def test_a_repeats_frame_opens_to_its_copies() -> None:
    """The "N×" frame around a closed repeated block offers its copies: a state drawing each
    copy as its own box, in order, whose frame folds them back; its boxes open nothing."""
    data = data_of(archcomp.view(REPEATED).html)
    keys = [s["key"] for s in data["states"]]
    assert keys == [[], ["lin"], ["copies:layers"], ["*"]]  # blocks first, copies after
    first, _, copies, _ = data["states"]
    frame = next(iter(first["frames"].values()))
    assert frame == {"anchor": "layers", "collapse": None, "copies": "copies:layers"}
    (back,) = copies["frames"].values()
    assert back["collapse"] == ["copies:layers"]
    drawn = {b["anchor"]: b for b in copies["boxes"].values() if b["anchor"].startswith("layers")}
    assert sorted(drawn) == ["layers.0", "layers.1", "layers.2"]
    assert all(b["opens"] is None for b in drawn.values())
    assert data["info"]["copy:layers.2"]["copies"] == "layers: copy 2 of 3"
    assert "copy 2" in copies["svg"]


def test_details_give_op_args_shapes_figures_and_spec_line() -> None:
    data = data_of(archcomp.view("mlp", dims={"B": 8}).html)
    fc1 = data["info"]["fc1"]
    assert fc1["op"] == "linear" and fc1["args"]["out_features"] == "5"
    assert fc1["shape"] == "[B, 5]" and fc1["shape_at"] == "[8, 5]"
    assert fc1["params"].startswith("55 ") and fc1["macs"].startswith("400 ")
    assert fc1["memory"] == "220 B"
    assert fc1["source"] == "specs/mlp.yaml:7"  # the package's spec, not an absolute path
    assert data["dims"] == "B=8"


def test_sources_are_relative_to_the_spec_folder(tmp_path: Path) -> None:
    """A user's spec and the block file it imports are shown relative to its folder: the
    page does not carry the reader's home directory layout."""
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "b.yaml").write_text(
        "archcomp: 1\nblocks:\n  twice:\n    inputs: [x]\n    nodes:\n"
        "      - {id: act, op: relu}\n    outputs: act\n"
    )
    (tmp_path / "model.yaml").write_text(
        "archcomp: 1\nname: m\nimports: [{path: blocks/b.yaml, blocks: [twice]}]\n"
        "inputs: {x: [B, 4]}\nnodes:\n  - {id: fc, op: linear, out_features: 4}\n"
        "  - {id: t, op: twice}\noutputs: {y: t}\n"
    )
    page = archcomp.view(tmp_path / "model.yaml", expand=["twice"]).html
    info = data_of(page)["info"]
    assert info["fc"]["source"] == "model.yaml:6"
    assert info["t.act"]["source"] == "blocks/b.yaml:6"
    assert str(tmp_path) not in page


def test_cli_view_and_draw_format_html(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["view", "mlp"]) == 0
    page = (tmp_path / "diagrams" / "mlp.html").read_text()
    assert data_of(page)["name"] == "mlp"
    assert main(["draw", "mlp", "-o", "m.html"]) == 0
    assert data_of((tmp_path / "m.html").read_text())["name"] == "mlp"
    assert main(["draw", "mlp", "--format", "html", "-o", "-"]) == 0
    assert data_of(capsys.readouterr().out)["name"] == "mlp"
    assert main(["build", "mlp", "-o", "m.safetensors"]) == 0  # an artifact: its spec
    assert main(["view", "m.safetensors", "-o", "a.html"]) == 0
    assert data_of((tmp_path / "a.html").read_text())["info"]["fc1"]["op"] == "linear"
    capsys.readouterr()
    assert main(["view", "mlp", "-o", "m.svg"]) == 2
    assert "name the file .html" in capsys.readouterr().err
    assert main(["draw", "mlp", "--format", "html", "--depth", "1", "-o", "x.html"]) == 2
    assert main(["view", "mlp", "--max-states", "0"]) == 2
    assert main(["view", "transformer", "--expand", "encoder_layer", "-o", "t.html"]) == 0
    assert data_of((tmp_path / "t.html").read_text())["states"][0]["key"] == ["encoder_layer"]
    assert main(["view", "mlp", "--expand", "nope"]) == 2
    assert "--expand nope" in capsys.readouterr().err


def test_cli_view_without_graphviz_exits_4_and_writes_nothing(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(render_mod, "find_dot", lambda: None)
    out = tmp_path / "m.html"
    assert main(["view", "mlp", "-o", str(out)]) == 4
    assert "not installed" in capsys.readouterr().err and not out.exists()


def test_graph_and_model_html_repr_is_the_view_and_falls_back_without_graphviz(monkeypatch):
    g = archcomp.check("mlp")
    model = archcomp.build("mlp", seed=0)
    for obj in (g, model):
        shown = obj._repr_html_()
        assert shown.startswith('<iframe srcdoc="&lt;!DOCTYPE html&gt;')
        assert 'sandbox="allow-scripts"' in shown
    monkeypatch.setattr(render_mod, "find_dot", lambda: None)
    assert (
        g._repr_html_() == "<code>Graph(&#x27;mlp&#x27;: 3 nodes; inputs x [B, 10] float32; "
        "outputs y [B, 2])</code>"
    )
    assert model._repr_html_() is None  # the notebook shows the text repr


def test_a_figure_past_the_time_limit_is_left_out_unless_it_is_the_first(monkeypatch, capsys):
    from archcomp.backends.graphviz import view as view_mod

    real = view_mod.run_dot
    calls: list[int] = []

    def slow_after_first(source: str, fmt: str, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise render_mod.RenderError("dot ran past its time limit", timed_out=True)
        return real(source, fmt, **kw)

    monkeypatch.setattr(view_mod, "run_dot", slow_after_first)
    data = data_of(archcomp.view("transformer").html)
    assert [s["key"] for s in data["states"]] == [[]] and len(calls) > 2
    calls.append(1)  # now the first figure too
    assert main(["view", "mlp", "-o", "/nonexistent/x.html"]) == 4
    assert "time limit" in capsys.readouterr().err
