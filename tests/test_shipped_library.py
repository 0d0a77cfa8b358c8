"""The spec library that ships inside the package: bare names, `archcomp specs`, and
`imports: [{library: NAME}]`, from a working directory that is not the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import archcomp
from archcomp.cli import main
from archcomp.frontend.library import SPECS_DIR, block_libraries, is_bare_name, model_specs
from archcomp.frontend.loader import load_program

ROOT = Path(__file__).resolve().parent.parent
SMALL_TRANSFORMER = [
    "-p",
    "N=1",
    "-p",
    "d_model=32",
    "-p",
    "d_ff=64",
    "-p",
    "h=2",
    "-p",
    "vocab=50",
]

# A spec of its own by the name of a shipped one, to see which of the two is read.
MY_GPT2 = """\
archcomp: 1
name: my_gpt2
inputs: {x: [B, 4]}
nodes: [{id: fc, op: linear, out_features: 3}]
outputs: fc
"""


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory outside the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_package_folder_is_the_repository_specs_folder() -> None:
    """specs/ at the repository root is the package's folder (a symlink), not a copy."""
    assert (ROOT / "specs").resolve() == SPECS_DIR
    assert SPECS_DIR.parent == Path(archcomp.__file__).resolve().parent
    assert sorted(model_specs()) == sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))
    assert sorted(block_libraries()) == sorted(
        p.stem for p in (ROOT / "specs" / "blocks").glob("*.yaml")
    )


@pytest.mark.parametrize(
    ("text", "bare"),
    [("gpt2", True), ("my-model", True), ("gpt2.yaml", False), ("./gpt2", False), ("a/b", False)],
)
def test_bare_name_is_without_slash_and_dot(text: str, bare: bool) -> None:
    assert is_bare_name(text) is bare


def test_cli_commands_take_a_bare_name(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "gpt2", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "gpt2: ok: 125 nodes; " in out and "lenet5: ok: " in out and "gpt2: ok: gpt2" not in out
    assert main(["summary", "gpt2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == 124_439_808
    assert main(["build", "transformer", *SMALL_TRANSFORMER, "-o", "t.safetensors"]) == 0
    assert main(["draw", "lenet5", "--format", "dot", "-o", "l.dot"]) == 0
    capsys.readouterr()
    assert (elsewhere / "l.dot").read_text().startswith("digraph lenet5")
    # An artifact built from a bare name embeds the spec and reloads without the library file.
    again = archcomp.load(elsewhere / "t.safetensors")
    want = archcomp.build(
        "transformer", params={"N": 1, "d_model": 32, "d_ff": 64, "h": 2, "vocab": 50}
    )
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in want.state_dict().items()
    }


def test_api_takes_a_bare_name(elsewhere: Path) -> None:
    assert archcomp.check("gpt2").name == "gpt2"
    assert archcomp.summary("lenet5").parameters == 61_706
    model = archcomp.build("mlp", seed=0)
    assert model(torch.randn(3, 10)).shape == (3, 2)


def test_a_file_of_the_same_name_wins_only_as_a_path(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (elsewhere / "gpt2.yaml").write_text(MY_GPT2)
    (elsewhere / "gpt2").write_text(MY_GPT2)
    assert archcomp.check("gpt2").name == "gpt2"
    assert archcomp.check("./gpt2.yaml").name == "my_gpt2"
    assert archcomp.check("gpt2.yaml").name == "my_gpt2"
    assert archcomp.check(Path("gpt2")).name == "my_gpt2"  # a Path is always a file
    assert main(["check", "gpt2", "./gpt2.yaml", "./gpt2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1:3] for line in lines] == [
        ["ok", "125 nodes; inputs ids [B, T]; outputs logits [B, T, 50257]"],  # named once
        ["ok", "my_gpt2"],
        ["ok", "my_gpt2"],
    ]


def test_an_unknown_bare_name_is_a_usage_error_listing_the_shipped_names(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (elsewhere / "mine.yaml").write_text(MY_GPT2)
    for cmd in (["check", "gtp2"], ["build", "gtp2"], ["draw", "gtp2"], ["summary", "gtp2"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert "no shipped spec named 'gtp2' (did you mean 'gpt2'?)" in err
        assert ", ".join(model_specs()) in err and "Traceback" not in err
    assert main(["check", "mine"]) == 2
    assert "write it as a path: ./mine.yaml" in capsys.readouterr().err
    with pytest.raises(archcomp.UsageError, match="no shipped spec named 'gtp2'"):
        archcomp.build("gtp2")


def test_a_missing_file_named_like_a_shipped_spec_points_at_the_bare_name(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "gpt2.yaml"]) == 2  # a usage error: no position in a missing file
    err = capsys.readouterr().err
    assert "spec file 'gpt2.yaml' does not exist" in err
    assert "'gpt2' (no slash, no .yaml) names the spec that ships with archcomp" in err


def test_specs_lists_every_shipped_spec_with_description_and_params(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["specs", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in found["specs"]] == list(model_specs())
    for s in found["specs"]:
        spec = load_program(Path(s["path"])).spec
        assert s["description"] == spec.description and s["description"]
        assert list(s["params"]) == list(spec.params)
    gpt2 = next(s for s in found["specs"] if s["name"] == "gpt2")
    assert gpt2["params"]["d_model"] == {"default": 768, "doc": "model width"}
    libs = {lib["name"]: lib["blocks"] for lib in found["libraries"]}
    assert libs["gpt"] == ["mlp", "gpt_block"]
    assert main(["specs"]) == 0
    text = capsys.readouterr().out
    assert "GPT-2 small, decoder-only causal Transformer with a tied LM head." in text
    assert "params: vocab=50257, context=1024, d_model=768, h=12, N=12, dropout=0.1" in text
    assert "blocks: mlp, gpt_block" in text


def _my_gpt(imports: str) -> str:
    return f"""\
archcomp: 1
name: mine
imports: [{imports}]
inputs: {{x: [B, T, 32]}}
nodes:
  - {{id: b, op: gpt_block, d_model: 32, h: 4, dropout: 0.0}}
outputs: b
"""


def test_library_import_equals_a_path_import_of_the_same_file(elsewhere: Path) -> None:
    """`{library: gpt}` gives the blocks that a path import of a copy of gpt.yaml gives."""
    (elsewhere / "by_name.yaml").write_text(_my_gpt("{library: gpt, blocks: [gpt_block]}"))
    (elsewhere / "gpt.yaml").write_text((SPECS_DIR / "blocks" / "gpt.yaml").read_text())
    (elsewhere / "by_path.yaml").write_text(_my_gpt("{path: gpt.yaml, blocks: [gpt_block]}"))
    by_name = archcomp.build("./by_name.yaml", seed=0)
    by_path = archcomp.build("./by_path.yaml", seed=0)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(by_name(x), by_path(x), rtol=0, atol=0)
    assert by_name.code == by_path.code


def test_a_library_imports_its_own_dependencies_inside_the_package(elsewhere: Path) -> None:
    """bert imports add_norm from transformer.yaml by path: allowed inside the package."""
    spec = """\
archcomp: 1
name: mine
imports: [{library: bert, blocks: [bert_layer]}]
inputs: {x: [B, T, 32], mask: {shape: [B, T], dtype: bool}}
nodes:
  - {id: b, op: bert_layer, in: {x: x, padding_mask: mask}, d_model: 32, h: 4, d_ff: 64,
     dropout: 0.0}
outputs: b
"""
    (elsewhere / "mine.yaml").write_text(spec)
    g = archcomp.check("./mine.yaml")
    assert g.nodes["b.norm1.norm"].op.name == "layer_norm"  # add_norm, from transformer.yaml


def test_the_json_schema_knows_library_imports(capsys: pytest.CaptureFixture[str]) -> None:
    import jsonschema

    assert main(["schema"]) == 0
    validator = jsonschema.Draft202012Validator(json.loads(capsys.readouterr().out))

    def valid(imp: object) -> bool:
        spec = {"archcomp": 1, "imports": [imp], "blocks": {}}
        return not list(validator.iter_errors(spec))

    assert valid({"library": "gpt", "blocks": ["gpt_block"]})
    assert valid({"path": "blocks/gpt.yaml"}) and valid("blocks/gpt.yaml")
    assert not valid({"library": "gpt", "path": "blocks/gpt.yaml"})
    assert not valid({"blocks": ["gpt_block"]})
    assert not valid({"library": "../blocks/gpt"})
