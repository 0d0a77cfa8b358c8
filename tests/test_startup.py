"""What the command line imports: a command imports what it needs when it needs it. Whole
processes, because start-up is what this guards; the times themselves are goals of
benchmarks/bench_startup.py, not asserted here (a busy machine must not fail the suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SPEC = Path(__file__).parents[1] / "specs" / "mlp.yaml"
HEAVY = ("torch", "networkx", "rich", "graphviz")


def _imported(*argv: str) -> set[str]:
    """The heavy modules a run of ``archcomp ARGV`` imported (its exit status 0)."""
    code = (
        "import json, sys\n"
        "from archcomp.cli.main import main\n"
        f"rc = main({list(argv)!r})\n"
        f"print(json.dumps([rc, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    rc, mods = json.loads(out.strip().splitlines()[-1])
    assert rc == 0
    return set(mods)


def test_check_of_a_valid_spec_imports_no_torch_networkx_rich_or_graphviz() -> None:
    assert _imported("check", str(SPEC)) == set()


def test_help_imports_nothing_heavy_and_not_the_front_end() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from archcomp.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    rc = main(['--help'])\n"
        "print(rc, sorted(m for m in sys.modules if m in ('pydantic', 'yaml', 'torch',"
        " 'networkx', 'rich', 'graphviz', 'archcomp.frontend.build')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == "0 []", out.stdout
