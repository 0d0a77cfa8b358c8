"""What the command prints and where: rich consoles on stdout and stderr, colour diagnostics,
``-`` for stdin and stdout, and ``--quiet``.

Colour is on where the stream is a terminal, off under ``NO_COLOR``, forced by
``FORCE_COLOR`` (rich reads both). Diagnostics are coloured by matching the text that
:meth:`SpecError.format` writes, so their wording stays in one place
(:mod:`archcomp.base.errors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from archcomp.base.errors import SpecError
from archcomp.base.text import visible

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

QUIET = [False]  # --quiet: no progress, no informational lines


def stderr() -> Console:
    """A console on the current ``sys.stderr`` (pytest's capture included); rich, a tenth of
    a second to import, is imported on the first message that needs it (:mod:`.console`)."""
    from archcomp.cli.console import stderr

    return stderr()


def stdout() -> Console:
    """A console on the current ``sys.stdout`` (see :func:`archcomp.cli.console.stdout`)."""
    from archcomp.cli.console import stdout

    return stdout()


def show(renderable: RenderableType) -> None:
    """A table on stdout (see :func:`archcomp.cli.console.show`)."""
    from archcomp.cli.console import show

    show(renderable)


def print_diagnostics(exc: SpecError) -> None:
    stderr().print(exc.format(), highlight=True)


def print_error(command: str | None, message: str, kind: str = "error") -> None:
    """``archcomp COMMAND: error: MESSAGE`` on stderr, coloured on a terminal."""
    prog = f"archcomp {command}" if command else "archcomp"
    # The last line of defence: whatever a message quotes from a file, no control or bidi
    # character reaches the terminal (texts from files are escaped where they are quoted,
    # so their newlines cannot start a line; the message's own line breaks stay).
    shown = "\n".join(visible(line) for line in message.split("\n"))
    stderr().print(f"{prog}: {kind}: {shown}", highlight=True)


def info(*lines: str) -> None:
    """An informational line on stdout ("wrote FILE"): left out under ``--quiet``."""
    if not QUIET[0]:
        for line in lines:
            print(line)
