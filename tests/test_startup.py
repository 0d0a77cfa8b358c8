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


def _modules_after(argv: list[str], names: tuple[str, ...]) -> set[str]:
    """Which of ``names`` a run of ``archcomp ARGV`` (its output discarded) imported."""
    code = (
        "import contextlib, io, json, sys\n"
        "from archcomp.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main({argv!r})\n"
        f"print(json.dumps([rc, sorted(m for m in {names!r} if m in sys.modules)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    rc, mods = json.loads(out.strip().splitlines()[-1])
    assert rc == 0
    return set(mods)


def test_summary_does_not_import_torchs_compiler() -> None:
    """The activation trace runs torch's Python meta kernels, which would import
    torch._dynamo (about 0.8 s of CPU) through torch._disable_dynamo: nocompile.py holds it
    off. MetaResults' own dispatch is not wrapped in it either."""
    assert _modules_after(["summary", str(SPEC)], ("torch", "torch._dynamo")) == {"torch"}


def test_without_compiler_imports_leaves_torchs_cache_as_it_found_it() -> None:
    """Inside, torch's dynamo-disabled meta kernels run without importing torch._dynamo;
    afterwards none of them keeps the stand-in cache (a later torch.compile gets the real
    disable), and a kernel then imports torch._dynamo as torch does."""
    code = (
        "import sys, torch\n"
        "from archcomp.backends.torch import nocompile as n\n"
        "fns = n.disabled_functions(n._wrapper_code())\n"
        "x = torch.zeros(2, 3, device='meta')\n"
        "with n.without_compiler_imports():\n"
        "    inside = sum(getattr(f, n.CACHE, None) is f for f in fns)\n"
        "    torch.relu(x * 2.0).mean()\n"
        "    during = 'torch._dynamo' in sys.modules\n"
        "left = sum(hasattr(f, n.CACHE) for f in fns)\n"
        "torch.relu(x * 2.0).mean()\n"
        "print(len(fns), inside, during, left, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found, inside, during, left, after = out.stdout.split()
    assert int(found) > 50 and int(inside) == int(found)
    assert (during, left, after) == ("False", "0", "True")


def test_op_argument_models_are_built_when_first_used() -> None:
    """Importing the op library builds no op's argument validator (pydantic's defer_build):
    ``check gpt2`` builds only those of the ops gpt2 uses."""
    code = (
        "import contextlib, io, sys\n"
        "from archcomp.ops.registry import REGISTRY\n"
        "import archcomp.ops\n"
        "def built():\n"
        "    return {op.args for op in REGISTRY.values() if op.args.__pydantic_complete__}\n"
        "before = built()\n"
        "from archcomp.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    rc = main(['check', 'gpt2'])\n"
        "print(rc, len(REGISTRY), len(before), len(built()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rc, ops, before, after = map(int, out.stdout.split())
    assert rc == 0 and ops > 50
    assert before <= 1  # mixture_of_experts draws its figure from an instance at import
    assert 1 < after < 15


def test_the_command_line_freezes_torchs_objects_and_a_library_user_keeps_its_collector() -> None:
    """The command line imports torch with the collector paused and freezes what is alive
    then (no later pass walks torch's objects: about 0.2 s of CPU in ``summary``); a program
    that imports archcomp's torch backend gets no frozen objects and its collector as it was."""
    code = (
        "import contextlib, gc, io, sys\n"
        "if sys.argv[1] == 'cli':\n"
        "    from archcomp.cli.main import main\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        f"        sys.argv = ['archcomp', 'summary', {str(SPEC)!r}]\n"
        "        assert main() == 0  # the process's own command line\n"
        "else:\n"
        "    import archcomp\n"
        f"    archcomp.summary({str(SPEC)!r})\n"
        "print(gc.get_freeze_count(), gc.isenabled())\n"
    )

    def run(how: str) -> tuple[int, str]:
        argv = [sys.executable, "-c", code, how]
        frozen, enabled = subprocess.run(
            argv, capture_output=True, text=True, check=True
        ).stdout.split()
        return int(frozen), enabled

    frozen, enabled = run("cli")
    assert frozen > 100_000 and enabled == "True"  # torch's import makes several hundred thousand
    assert run("library") == (0, "True")
