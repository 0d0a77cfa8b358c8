"""The docs cannot rot: generated docs are current, and documented examples run."""

from __future__ import annotations

import re
from pathlib import Path

import archcomp
from archcomp import load_graph
from archcomp.cli.ops import ops_markdown
from archcomp.ir.dims import Sym

ROOT = Path(__file__).resolve().parent.parent


def test_ops_md_is_current() -> None:
    assert (ROOT / "docs" / "ops.md").read_text() == ops_markdown(), (
        "docs/ops.md is out of date: run archcomp ops --markdown > docs/ops.md"
    )


def test_every_op_is_documented_in_ops_md() -> None:
    text = (ROOT / "docs" / "ops.md").read_text()
    for name in archcomp.ops.all_ops():
        assert f"## `{name}`" in text


def test_spec_format_first_example_checks(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "spec-format.md").read_text()
    first = re.search(r"```yaml\n(archcomp: 1.*?)```", doc, re.S)
    assert first is not None
    spec = tmp_path / "mlp.yaml"
    spec.write_text(first.group(1))
    g = archcomp.check(spec)
    assert g.nodes["fc1"].args.in_features == 10


def test_readme_python_example_runs(tmp_path: Path) -> None:
    """The README's Python block is executed as written, in an empty folder: what it writes
    (mlp.safetensors, which save then refuses to overwrite) stays out of the repository."""
    import os

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block is not None
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict[str, object] = {}
        exec(compile(block.group(1), "README.md", "exec"), namespace)  # the README's own code
    finally:
        os.chdir(cwd)
    assert "diagram" in namespace


def test_readme_names_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "scripts/main.sh" in readme and "scripts/test.sh" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


def test_spec_format_examples_of_modern_ops_check() -> None:
    """The Llama layer and the class-token snippets of docs/spec-format.md check as written."""
    text = (ROOT / "docs" / "spec-format.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    llama = next(b for b in blocks if "input_layernorm" in b)
    g = load_graph(
        "archcomp: 1\nname: m\ninputs:\n  x: [B, T, 4096]\nnodes:\n"
        + "".join(f"  {line}\n" for line in llama.splitlines())
        + "outputs: {y: res_2}\n"
    )
    assert g.output_types["y"].shape == (Sym.symbol("B"), Sym.symbol("T"), 4096)  # type: ignore[union-attr]
    assert g.nodes["self_attn"].op.param_shapes(g.nodes["self_attn"].args)["k_proj.weight"] == (
        1024,
        4096,
    )
    vit = next(b for b in blocks if "class_token" in b)
    g = load_graph(
        "archcomp: 1\nname: m\nparams: {d_model: 8}\ninputs:\n  tokens: [B, 196, 8]\nnodes:\n"
        + "".join(f"  {line}\n" for line in vit.splitlines())
        + "outputs: {y: embedded}\n"
    )
    assert g.output_types["y"].shape == (Sym.symbol("B"), 197, 8)  # type: ignore[union-attr]


def test_spec_format_mask_example_checks() -> None:
    """The causal-mask snippet of docs/spec-format.md checks, with the dtypes it states."""
    text = (ROOT / "docs" / "spec-format.md").read_text()
    snippet = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "arange" in b)
    g = load_graph(
        "archcomp: 1\nname: m\ninputs:\n  x: [B, T, 8]\n  scores: [B, T, T]\nnodes:\n"
        + "".join(f"  {line}\n" for line in snippet.splitlines())
        + "outputs: {y: masked, r: relative}\n"
    )
    assert str(g.nodes["future"].outputs["out"]) == "[T, T] bool"
    assert str(g.output_types["r"]) == "[T, T] int64"
    assert str(g.output_types["y"]) == "[B, T, T] float32"
