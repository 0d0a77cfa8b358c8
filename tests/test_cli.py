"""Command-line behaviour that is not about one spec: pipes, entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_output_into_a_closed_pipe_stops_quietly() -> None:
    """`archcomp schema | head -1`: no traceback, no error message."""
    run = subprocess.run(
        f"{sys.executable} -m archcomp schema | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert run.stdout.strip() == "{"
    assert run.stderr == ""


def test_module_entry_points_have_every_command() -> None:
    for module in ("archcomp", "archcomp.cli"):
        run = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=False
        )
        assert run.returncode == 0
        for command in ("check", "build", "summary", "draw", "schema", "ops"):
            assert f"    {command} " in run.stdout, (module, command)
