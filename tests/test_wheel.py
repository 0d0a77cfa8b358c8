"""The wheel a pip user gets: built from this tree, installed into a fresh venv outside the
repository, and run there on the shipped specs by name from a directory that is not a clone.

To stay offline and fast, the fresh venv takes archcomp's dependencies (torch, pydantic, ...)
from the environment running the tests through a .pth file, and the wheel itself is installed
with ``--no-deps``; every check asserts that the archcomp it runs is the wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from doc_examples import Example, all_examples

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TIMEOUT = 180  # seconds for one step; a step takes a few


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    work: Path  # an empty working directory outside the repository

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        return subprocess.run(
            args, cwd=self.work, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )

    def archcomp(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = self.run(str(self.venv / "bin" / "archcomp"), *args)
        assert r.returncode == 0, r.stderr
        return r

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        r = self.run(str(self.venv / "bin" / "python"), "-c", code)
        assert r.returncode == 0, r.stderr
        return r


def _step(*args: str | Path) -> None:
    r = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert r.returncode == 0, f"{' '.join(map(str, args))}\n{r.stdout}\n{r.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the tree, so setuptools' build/ and egg-info stay out of the clone.
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "archcomp", src / "archcomp", ignore=shutil.ignore_patterns("__pycache__")
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _step(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", src)
    (wheel,) = (tmp / "dist").glob("archcomp-*.whl")

    venv = tmp / "venv"
    _step(sys.executable, "-m", "venv", "--without-pip", venv)
    purelib = subprocess.run(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies, after the venv's own site-packages on sys.path (the .pth files of these
    # folders, the repository's editable install among them, are not run).
    here = dict.fromkeys([*site.getsitepackages(), sysconfig.get_path("purelib")])
    Path(purelib, "_archcomp_test_deps.pth").write_text("".join(f"{p}\n" for p in here))
    _step(*pip, "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index", wheel)

    work = tmp / "work"
    work.mkdir()
    return Installed(wheel, venv, work)


def test_the_wheel_holds_the_spec_library_and_the_metadata(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        (meta_name,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        meta = whl.read(meta_name).decode()
    shipped = {
        f"archcomp/specs/{p.relative_to(ROOT / 'archcomp' / 'specs')}"
        for p in (ROOT / "archcomp" / "specs").rglob("*.yaml")
    }
    assert {"archcomp/specs/gpt2.yaml", "archcomp/specs/blocks/gpt.yaml"} <= shipped
    assert shipped <= names
    assert "archcomp/py.typed" in names
    assert f"Version: {PROJECT['version']}\n" in meta
    assert f"Requires-Python: {PROJECT['requires-python']}\n" in meta
    assert "Requires-Dist: torch<2.14,>=2.6\n" in meta
    assert "Classifier: Programming Language :: Python :: 3.11\n" in meta
    assert "UNKNOWN" not in meta and "example.com" not in meta


def test_the_installed_wheel_is_what_runs(installed: Installed) -> None:
    r = installed.python("import archcomp, json; print(json.dumps(archcomp.__file__))")
    module = Path(json.loads(r.stdout))
    assert module.is_relative_to(installed.venv), module  # not the repository's editable install
    r = installed.archcomp("--version")
    assert r.stdout.strip() == f"archcomp {PROJECT['version']}"


def test_cli_runs_shipped_specs_by_name_outside_the_repository(installed: Installed) -> None:
    r = installed.archcomp("check", "gpt2")
    assert r.stdout.startswith("gpt2: ok: 125 nodes; ")
    small = ("-p", "N=1", "-p", "d_model=32", "-p", "d_ff=64", "-p", "h=2", "-p", "vocab=50")
    installed.archcomp("build", "transformer", *small, "-o", "x.safetensors")
    assert (installed.work / "x.safetensors").stat().st_size > 0
    fmt = "svg" if shutil.which("dot") else "dot"
    installed.archcomp("draw", "lenet5", "--format", fmt, "-o", f"lenet5.{fmt}")
    drawn = (installed.work / f"lenet5.{fmt}").read_text()
    assert ("<svg" in drawn) if fmt == "svg" else drawn.startswith("digraph lenet5")
    if fmt == "svg":  # the interactive page, from the installed package
        installed.archcomp("view", "lenet5", "-o", "lenet5.html")
        assert '"name":"lenet5"' in (installed.work / "lenet5.html").read_text()
    listed = json.loads(installed.archcomp("specs", "--json").stdout)
    want = sorted(p.stem for p in (ROOT / "archcomp" / "specs").glob("*.yaml"))
    assert sorted(s["name"] for s in listed["specs"]) == want
    assert all(Path(s["path"]).is_relative_to(installed.venv) for s in listed["specs"])
    assert "GPT-2 small" in installed.archcomp("specs").stdout


def test_python_builds_by_name_and_imports_shipped_blocks(installed: Installed) -> None:
    (installed.work / "mine.yaml").write_text(
        "archcomp: 1\nname: mine\nimports: [{library: gpt, blocks: [gpt_block]}]\n"
        "inputs: {x: [B, T, 32]}\n"
        "nodes: [{id: b, op: gpt_block, d_model: 32, h: 4, dropout: 0.0}]\noutputs: b\n"
    )
    code = """
import torch, archcomp
m = archcomp.build("mlp", seed=0)
assert m(torch.randn(3, 10)).shape == (3, 2)
mine = archcomp.build("./mine.yaml", seed=0)
assert mine(torch.randn(2, 5, 32)).shape == (2, 5, 32)
archcomp.save(mine, "mine.safetensors")
again = archcomp.load("mine.safetensors")
x = torch.randn(2, 5, 32)
torch.testing.assert_close(again.eval()(x), mine.eval()(x))
print("ok")
"""
    assert installed.python(code).stdout.strip() == "ok"


_FROM_PRETRAINED = """
import json, sys, archcomp, torch
from safetensors.torch import load_file, save_file
for folder in json.loads(sys.argv[1]):
    model = archcomp.from_pretrained(folder)
    assert archcomp.__file__.startswith(sys.argv[2]), archcomp.__file__
    with torch.no_grad():
        y = model(**load_file(f"{folder}/inputs.safetensors"))  # the outputs by name
    save_file({k: v.contiguous() for k, v in y.items()}, f"{folder}/got.safetensors")
print("ok")
"""


def test_from_pretrained_of_every_shipped_family_outside_the_repository(
    installed: Installed,
) -> None:
    """Each family with a shipped mapping: a random small transformers checkpoint, loaded by the
    installed wheel with no spec and no mapping, gives transformers' outputs (the tolerance is
    the rule's, counted on the same run in this process)."""
    pytest.importorskip("transformers")
    import numerics
    import torch
    from hf_models import FAMILIES, outputs, save, shipped
    from safetensors.torch import load_file, save_file

    import archcomp

    folders, expected = [], {}
    for name in shipped():
        family, folder = FAMILIES[name], installed.work / "hf" / name
        hf = save(family, folder)
        x = family.inputs(torch.Generator().manual_seed(1))
        save_file({k: v.contiguous() for k, v in x.items()}, folder / "inputs.safetensors")
        ours = archcomp.from_pretrained(folder)
        with torch.no_grad(), numerics.RoundingChains() as chains:
            want, got = family.hf_call(hf, x), outputs(ours, x)
        expected[name] = {
            k: (w, chains.tolerance(torch.float32, got[k], w)) for k, w in want.items()
        }
        folders.append(str(folder))
    r = installed.run(
        str(installed.venv / "bin" / "python"),
        "-c",
        _FROM_PRETRAINED,
        json.dumps(folders),
        str(installed.venv),
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    for name, folder in zip(expected, folders, strict=True):
        got = load_file(f"{folder}/got.safetensors")
        assert set(got) == set(expected[name]), name
        for key, (want, tol) in expected[name].items():
            numerics.assert_close(got[key], want, tol, msg=f"{name}: {key}")


SHELL_PRELUDE = """set -euo pipefail
pip() { test "$1" = install; }  # the wheel is installed already
"""


@pytest.mark.parametrize("example", all_examples(), ids=lambda e: e.id)
def test_doc_examples_run_against_the_wheel(installed: Installed, example: Example) -> None:
    """Every Python and shell example of README.md and docs/ runs as written, in an empty folder
    outside the repository (tests/doc_examples.py; a block marked ``not run`` says why)."""
    if example.not_run:
        pytest.skip(f"not run: {example.not_run}")
    if "draw" in example.code and not shutil.which("dot"):
        pytest.skip("needs Graphviz's dot")
    folder = installed.work / example.id.replace("/", "_").replace(":", "_")
    folder.mkdir()
    if example.language == "python":
        args = [str(installed.venv / "bin" / "python"), "-c", example.code]
    else:
        args = ["bash", "-c", SHELL_PRELUDE + example.code]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{installed.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    r = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, f"{example.id}:\n{example.code}\n{r.stdout}\n{r.stderr}"


def test_every_doc_example_runs_or_says_why_not() -> None:
    found = all_examples()
    assert any(e.doc.name == "README.md" and e.language == "python" for e in found)
    ran = [e for e in found if not e.not_run]
    assert {e.doc.name for e in ran} >= {"README.md", "compiler.md", "spec-format.md"}
