"""What a new user meets in the first hour (issue 27): shipped names where a clone's paths
would fail, a summary of a built model or an artifact, pickling, a clean ``print(model)``.

Error texts are golden files in tests/golden/first_hour/ (``ARCHCOMP_UPDATE_GOLDEN=1``
rewrites them after a deliberate change)."""

from __future__ import annotations

import copy
import io
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

import archcomp
from archcomp.cli import main

GOLDEN = Path(__file__).resolve().parent / "golden" / "first_hour"
UPDATE = os.environ.get("ARCHCOMP_UPDATE_GOLDEN") == "1"
TINY_GPT2 = {"N": 2, "d_model": 32, "h": 4, "vocab": 50}


def golden(name: str, text: str) -> None:
    """``text`` is tests/golden/first_hour/NAME.txt (ARCHCOMP_UPDATE_GOLDEN=1 rewrites it)."""
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with ARCHCOMP_UPDATE_GOLDEN=1"
    assert text == path.read_text()


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, as after ``pip install`` (no specs/ beside it)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def artifact(elsewhere: Path) -> Path:
    path = elsewhere / "mlp.safetensors"
    archcomp.save(archcomp.build("mlp", seed=0), path)
    return path


def test_a_clone_path_after_pip_install_hints_the_shipped_name(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(["check", "specs/mlp.yaml"], capsys)
    assert code == 2
    golden("clone_path", err)
    with pytest.raises(archcomp.UsageError, match=r"'mlp' \(no slash, no \.yaml\) names the spec"):
        archcomp.check("specs/mlp.yaml")
    code, _, err = cli(["check", "specs/not_shipped.yaml"], capsys)
    assert code == 2 and "names the spec" not in err  # no hint for a name that does not ship


def test_summary_check_and_draw_take_a_built_model(elsewhere: Path) -> None:
    model = archcomp.build("gpt2", TINY_GPT2, seed=0)
    s = archcomp.summary(model)
    assert s.parameters == archcomp.summary("gpt2", TINY_GPT2).parameters
    assert s.parameters == sum(p.numel() for p in model.parameters())
    assert archcomp.check(model).name == "gpt2"
    assert archcomp.draw(model).source == archcomp.draw("gpt2", TINY_GPT2).source
    with pytest.raises(archcomp.UsageError, match="not int"):
        archcomp.summary(3)  # type: ignore[arg-type]


def test_summary_check_and_draw_take_an_artifact(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert archcomp.summary(str(artifact)).parameters == 67
    assert archcomp.summary(artifact).parameters == 67
    assert archcomp.check(artifact.name).name == "mlp"
    assert archcomp.draw(artifact.name).source == archcomp.draw("mlp").source
    code, out, _ = cli(["summary", artifact.name], capsys)
    assert code == 0 and out.startswith("node ") and "fc2" in out
    code, out, _ = cli(["check", artifact.name], capsys)
    assert code == 0 and out.startswith("mlp.safetensors: ok: mlp: 3 nodes")
    code, out, _ = cli(["draw", artifact.name, "-o", "-", "--format", "dot"], capsys)
    assert code == 0 and out.startswith("digraph mlp {")
    code, _, err = cli(["summary", artifact.name, "-p", "x=1"], capsys)
    assert code == 2
    golden("artifact_with_param", err)


def test_check_names_a_spec_once(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["check", "mlp"], capsys)
    assert code == 0 and out == "mlp: ok: 3 nodes; inputs x [B, 10]; outputs y [B, 2]\n"


@pytest.mark.parametrize("name", ["mlp", "gpt2"])
def test_torch_save_of_a_model_round_trips(name: str) -> None:
    params = TINY_GPT2 if name == "gpt2" else None
    model = archcomp.build(name, params, seed=3).eval()  # unpickling builds with seed 0
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    assert isinstance(again, archcomp.ArchModule) and type(again).__name__ == type(model).__name__
    assert not again.training
    x = torch.randint(0, 50, (2, 5)) if name == "gpt2" else torch.randn(3, 10)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert again.state_dict().keys() == model.state_dict().keys()
    if name == "gpt2":  # the tie is still one tensor
        assert again.lm_head.weight is again.wte.weight


def test_print_model_shows_the_module_tree_only() -> None:
    model = archcomp.build("gpt2", TINY_GPT2, seed=0)
    text = str(model)
    assert text.startswith("Gpt2(\n  spec='gpt2'\n  nodes: wte (embedding) -> wpe (")
    assert "h_ (2x gpt_block) ->" in text and "\n  (wte): Embedding(50, 32)" in text
    cnn = str(archcomp.build("cnn", seed=0))  # the ops without a module are named too
    assert all(f"{n} (" in cnn for n in ("relu1", "pool1", "flat", "relu3"))
    assert "def forward" not in text and "print_readable" not in text
    # fx's per-instance class keeps its __qualname__ (GraphModule.__new__ finds it by that)
    assert type(model).__name__ == "Gpt2"
    c = copy.deepcopy(model)
    torch.testing.assert_close(
        c.eval()(torch.tensor([[1, 2]])), model.eval()(torch.tensor([[1, 2]]))
    )
    assert isinstance(model, archcomp.ArchModule) and "ArchModule" in archcomp.__all__


def test_dims_set_the_sizes_a_summary_is_computed_at(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    default = archcomp.summary("mlp")  # its spec has no dims
    assert default.dims == {"B": 1} and default.unset_dims == ["B"]
    assert "per forward at B=1 (B not set, so 1; --dims or dims= sets it)" in str(default)
    eight = archcomp.summary("mlp", dims={"B": 8})
    assert eight.dims == {"B": 8} and eight.unset_dims == [] and "not set" not in str(eight)
    assert eight.macs == 8 * default.macs == 8 * 60
    assert archcomp.summary("gpt2", TINY_GPT2).dims == {"B": 1, "T": 1024}  # the spec's dims
    code, out, _ = cli(["summary", "gpt2", "--dims", "B=8,T=512", "--json"], capsys)
    assert code == 0 and '"dims": {\n    "B": 8,\n    "T": 512\n  }' in out
    errors = []
    for args in (["--dims", "b=2"], ["--dims", "B=0"], ["-p", "B=8"]):
        code, _, err = cli(["summary", "gpt2", *args], capsys)
        assert code == 2
        errors.append(err.splitlines()[-1])
    golden("dims_errors", "\n".join(errors) + "\n")
    with pytest.raises(archcomp.UsageError, match="dim T must be an integer >= 1"):
        archcomp.summary("gpt2", TINY_GPT2, dims={"T": 0})


def test_rotary_tables_on_meta_are_shapes_only_and_materialise_exactly() -> None:
    from archcomp.nn.rotary import Llama3Scaling, RotaryEmbedding

    kw = {"head_dim": 16, "theta": 500000.0, "max_len": 64, "scaling": Llama3Scaling()}
    meta = RotaryEmbedding(**kw, device="meta", dtype=torch.bfloat16)
    assert meta.cos.shape == meta.sin.shape == (64, 8) and meta.cos.dtype == torch.bfloat16
    real = RotaryEmbedding(**kw, dtype=torch.bfloat16)
    meta.to_empty(device="cpu").reset_parameters()  # what archcomp.distributed.materialize does
    assert torch.equal(meta.cos, real.cos) and torch.equal(meta.sin, real.sin)


def test_save_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    model = archcomp.build("mlp", seed=0)
    path = archcomp.save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    other = archcomp.build("mlp", seed=1)
    with pytest.raises(archcomp.UsageError) as exc:
        archcomp.save(other, path)
    golden("save_exists", str(exc.value).replace(str(tmp_path), "TMP") + "\n")
    assert path.read_bytes() == before
    archcomp.save(other, path, force=True)
    torch.testing.assert_close(archcomp.load(path).fc1.weight, other.fc1.weight)


def test_specs_fit_the_terminal_and_show_derived_params(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = cli(["specs"], capsys)
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 100
    assert "positions=197" in out and "${" not in out  # vit_b16's derived param, evaluated
    assert "ARCHITECTURES.md" not in out


def test_emitted_python_says_what_it_imports_and_loads_ties_strictly(tmp_path: Path) -> None:
    from archcomp.backends.torch.emit import emit_python

    model = archcomp.build("gpt2", TINY_GPT2, seed=0)
    source = emit_python(model)
    assert "_pytree" not in source and "strict=False)  # tied" not in source
    assert "TIED = ('lm_head.weight',)" in source
    path = archcomp.save(model, tmp_path / "g.safetensors")
    space: dict[str, object] = {}
    exec(compile(source, "gpt2_emitted.py", "exec"), space)
    ejected = space["Gpt2"]()  # type: ignore[operator]
    from safetensors.torch import load_file

    missing, unexpected = ejected.load_state_dict(load_file(path), strict=False)
    assert not unexpected and set(missing) <= set(space["TIED"])  # type: ignore[call-overload]
    ids = torch.randint(0, 50, (2, 5))
    torch.testing.assert_close(ejected.eval()(ids), model.eval()(ids), rtol=0, atol=0)


def test_an_error_caused_by_an_override_names_it(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(["check", "gpt2", "-p", "h=7"], capsys)
    assert code == 1
    golden("override_blamed", err.replace(str(Path(archcomp.__file__).parent), "ARCHCOMP"))
    with pytest.raises(archcomp.SpecError, match="with the override h=7"):
        archcomp.check("gpt2", params={"h": 7})


def test_readme_and_spec_format_name_every_shipped_block_library() -> None:
    from archcomp.frontend.library import block_libraries

    root = Path(__file__).resolve().parent.parent
    lists = {  # the sentence of each that names them
        "README.md": r"block libraries in\s+`specs/blocks/` \(([^)]*)\)",
        "docs/spec-format.md": r"`archcomp specs`\s+lists them: (.*?), the files of",
    }
    for doc, pattern in lists.items():
        found = re.search(pattern, (root / doc).read_text(), re.S)
        assert found is not None, doc
        named = re.findall(r"`(\w+)`", found.group(1))
        assert named == sorted(block_libraries()), f"{doc} lists {named}"


def test_notebook_summary_footer_keeps_its_indentation_and_rules() -> None:
    page = archcomp.summary("gpt2", TINY_GPT2)._repr_html_()
    foot = page[page.index("<tfoot>") :]
    assert foot.count("padding-left:0.3em;border-top:1px solid #999") == 4  # the four groups
    assert 'padding-left:1.5em;">trainable</td>' in foot  # under "parameters"
    assert 'padding-left:1.5em;">parameters</td>' in foot  # the bytes of them, under "memory"
    assert '<tr style="border-bottom:1px solid #999">' in page


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_a_drawing_in_a_notebook_shrinks_to_the_cell() -> None:
    diagram = archcomp.draw(archcomp.build("cnn"), shapes=True, param_counts=True)
    svg = diagram._repr_mimebundle_()["image/svg+xml"]
    assert '<svg style="max-width:100%;height:auto" width=' in svg and "viewBox=" in svg
