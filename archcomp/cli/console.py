"""The rich side of :mod:`archcomp.cli.output`: consoles, the diagnostics' colours, tables.
Imported only when a command prints an error or a table."""

from __future__ import annotations

import io
import os
import sys
from typing import Any

from rich.console import Console, RenderableType
from rich.highlighter import RegexHighlighter
from rich.theme import Theme


class DiagnosticHighlighter(RegexHighlighter):
    """``file:1:2: error: ...``, the source line's gutter, the caret, ``= hint:``."""

    base_style = "diag."
    highlights = [  # noqa: RUF012 - rich's API is a class attribute
        r"(?m)^(?P<loc>[^\n]*?:\d+:\d+:) ",
        r"(?m)(?P<error>\berror:)",
        r"(?m)(?P<warning>\bwarning:)",
        r"(?m)^(?P<gutter> +\d* \|)",
        r"(?m)^ +\d* \| *(?P<caret>\^[\^~]*)$",
        r"(?m)^ += (?P<hint>hint:)",
        r"(?m)^ += (?P<note>note:)",
        r"(?m)^(?P<count>\d+ errors)$",
    ]


THEME = Theme(
    {
        "diag.loc": "bold",
        "diag.error": "bold red",
        "diag.warning": "bold yellow",
        "diag.gutter": "blue",
        "diag.caret": "bold red",
        "diag.hint": "bold cyan",
        "diag.note": "bold",
        "diag.count": "bold red",
    }
)


def stderr() -> Console:
    """A console on the current ``sys.stderr`` (pytest's capture included)."""
    return Console(
        file=sys.stderr,
        theme=THEME,
        highlighter=DiagnosticHighlighter(),
        soft_wrap=True,
        emoji=False,
        markup=False,
    )


def stdout() -> Console:
    """A console on the current ``sys.stdout``: the terminal's width on a terminal, else
    wide enough that tables never wrap."""
    tty = isatty(sys.stdout)
    return Console(
        file=sys.stdout,
        width=None if tty else 10_000,
        soft_wrap=not tty,
        highlight=False,
        emoji=False,
        markup=False,
    )


def show(renderable: RenderableType) -> None:
    """A table on stdout: coloured at the terminal's width on a terminal, else plain text as
    wide as it needs, without trailing blanks."""
    if isatty(sys.stdout) or os.environ.get("FORCE_COLOR"):
        stdout().print(renderable)
        return
    buf = io.StringIO()
    Console(file=buf, width=10_000, color_system=None, highlight=False, emoji=False).print(
        renderable
    )
    print("\n".join(line.rstrip() for line in buf.getvalue().splitlines()))


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
