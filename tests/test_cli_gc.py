"""The command line's collector policy (a paused collector while building, a freeze before a
command line's process exits) never leaks into a caller that runs ``main`` in-process."""

from __future__ import annotations

import gc
from pathlib import Path

from archcomp.cli import main


def test_in_process_build_leaves_the_collector_as_it_was(tmp_path: Path) -> None:
    before = (gc.isenabled(), gc.get_freeze_count())
    assert main(["build", "mlp", "-o", str(tmp_path / "m.safetensors"), "-q"]) == 0
    assert (gc.isenabled(), gc.get_freeze_count()) == before
    assert main(["build", "nosuchspec", "-q"]) != 0  # and when the command fails
    assert (gc.isenabled(), gc.get_freeze_count()) == before
