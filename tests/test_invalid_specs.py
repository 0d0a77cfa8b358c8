"""Every error class has a spec file in tests/specs/invalid/ with its exact expected message.

A case file is a spec, then a marker line, then the expected output of ``archcomp check`` as
comments. Regenerate the expected parts with ``ARCHCOMP_UPDATE_GOLDEN=1 pytest``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archcomp.cli import main

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((ROOT / "tests" / "specs" / "invalid").rglob("*.yaml"))
MARKER = "# ---- expected ----"
UPDATE = os.environ.get("ARCHCOMP_UPDATE_GOLDEN") == "1"


def _expected(text: str) -> str:
    _, _, tail = text.partition(MARKER + "\n")
    return "".join(
        line[2:] if line.startswith("# ") else line[1:] for line in tail.splitlines(keepends=True)
    )


def _run(rel: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        code = main(["check", rel])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr()
    return code, out.err


@pytest.mark.parametrize(
    "case", CASES, ids=[str(c.relative_to(ROOT / "tests" / "specs")) for c in CASES]
)
def test_invalid_spec(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rel = str(case.relative_to(ROOT))
    text = case.read_text()
    code, err = _run(rel, capsys)
    assert code == 1, err
    assert "Traceback" not in err
    if UPDATE:
        head = text.partition(MARKER)[0].rstrip("\n") + "\n"
        body = "".join(
            "# " + line if line.strip() else "#\n" for line in err.splitlines(keepends=True)
        )
        case.write_text(head + MARKER + "\n" + body)
        return
    assert MARKER in text, f"{rel} has no expected section; run with ARCHCOMP_UPDATE_GOLDEN=1"
    assert err == _expected(text)


REQUIRED_CODES = {
    "duplicate-key",
    "yaml-tag",
    "yaml-alias",
    "yaml-merge-key",
    "yaml-ambiguous-number",
    "yaml-syntax",
    "yaml-multiple-documents",
    "yaml-key",
    "empty-spec",
    "not-a-mapping",
    "missing-version",
    "unsupported-version",
    "unknown-key",
    "missing-key",
    "invalid-value",
    "unknown-op",
    "reserved-name",
    "ambiguous-dim",
    "bad-expression",
    "undefined-reference",
    "duplicate-id",
    "cycle",
    "unused-node",
    "unused-input",
    "bad-reference",
    "shape-mismatch",
    "block-cycle",
    "too-many-nodes",
    "bad-tie",
    "import-url",
    "import-absolute",
    "import-escape",
    "import-not-found",
    "import-cycle",
    "unknown-block",
    "unknown-library",
    "import-form",
}


def test_corpus_covers_every_error_class(capsys: pytest.CaptureFixture[str]) -> None:
    """Each diagnostic code a spec file can cause has a case (read from ``check --json``)."""
    import json

    codes: set[str] = set()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for case in CASES:
            main(["check", "--json", str(case.relative_to(ROOT))])
            for result in json.loads(capsys.readouterr().out):
                codes |= {e["type"] for e in result.get("errors", [])}
    finally:
        os.chdir(cwd)
    assert REQUIRED_CODES - codes == set()


def test_cli_exit_codes_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "archcomp: 1\nname: x\ninputs: {x: [B, 2]}\nnodes: [{id: a, op: nope}]\noutputs: a\n"
    )
    run = [sys.executable, "-m", "archcomp", "check"]
    r = subprocess.run([*run, str(bad)], capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "unknown op 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*run], capture_output=True, text=True, check=False)
    assert r.returncode == 2
    r = subprocess.run(
        [*run, str(ROOT / "specs" / "mlp.yaml"), "-p", "nope=1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and "unknown param 'nope'" in r.stderr
