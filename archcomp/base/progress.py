"""Progress of the steps that can take more than about a second (allocation and
initialisation, hashing and writing an artifact, Graphviz's layout).

Where it shows: on a terminal (stderr is a TTY), a rich progress bar on stderr; in a Jupyter
kernel, one output line updated in place (IPython display ids, so no widget library is needed);
anywhere else (a pipe, a file, CI logs), nothing. A step that ends within
``ARCHCOMP_PROGRESS_DELAY`` seconds (default 0.5) shows nothing either, so quick builds stay
quiet. :func:`showing` turns it on (``True``: also on a non-terminal) or off (``False``: the
CLI's ``--quiet``) for what runs inside it; :func:`set_default` does so for the whole process.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol

from archcomp.base.units import fmt_bytes, fmt_count

_MODE: ContextVar[bool | None] = ContextVar("archcomp_progress", default=None)
_DEFAULT: list[bool | None] = [None]
NOTEBOOK_INTERVAL = 0.1  # seconds between two updates of a notebook's line

Update = Callable[[int], None]  # the step's progress so far (bytes or items done)


@contextlib.contextmanager
def showing(on: bool | None) -> Iterator[None]:
    """Progress inside this block: ``True`` always, ``False`` never, ``None`` as around it."""
    if on is None:
        yield
        return
    token = _MODE.set(on)
    try:
        yield
    finally:
        _MODE.reset(token)


def set_default(on: bool | None) -> None:
    """The process-wide setting (the CLI's ``--quiet`` sets ``False``)."""
    _DEFAULT[0] = on


def delay() -> float:
    try:
        return max(0.0, float(os.environ.get("ARCHCOMP_PROGRESS_DELAY", "0.5")))
    except ValueError:
        return 0.5


class _View(Protocol):
    def update(self, done: int) -> None: ...
    def close(self, done: int) -> None: ...


@contextlib.contextmanager
def task(description: str, total: int | None = None, *, unit: str = "bytes") -> Iterator[Update]:
    """A step's progress: call the yielded function with the amount done so far.

    ``total`` None is a step of unknown length (a spinner and the time taken); ``unit`` is
    ``bytes`` or ``items``. Nothing is drawn unless the step outlasts :func:`delay`.
    """
    make = _sink()
    if make is None:
        yield ignore
        return
    start = time.monotonic()
    wait = delay()
    view: list[_View] = []
    done = [0]

    def update(n: int) -> None:
        done[0] = n
        if not view:
            if time.monotonic() - start < wait:
                return
            view.append(make(description, total, unit))
        view[0].update(n)

    try:
        yield update
    finally:
        if view:
            view[0].close(done[0] if total is None else max(done[0], total))


def ignore(n: int) -> None:
    """An :data:`Update` that shows nothing."""


def _sink() -> Callable[[str, int | None, str], _View] | None:
    mode = _MODE.get()
    if mode is None:
        mode = _DEFAULT[0]
    if mode is False:
        return None
    if _in_notebook():
        return _NotebookView
    if mode is True or _isatty(sys.stderr):
        return _TerminalView
    return None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _TerminalView:
    """A rich progress bar on stderr; the finished bar stays, as a record of the step."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        columns: list[ProgressColumn | str] = [
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description}"),
        ]
        if total is not None:
            columns += [
                BarColumn(),
                TaskProgressColumn(),
                DownloadColumn(binary_units=True) if unit == "bytes" else MofNCompleteColumn(),
            ]
        columns.append(TimeElapsedColumn())
        self.progress = Progress(*columns, console=Console(stderr=True), transient=False)
        self.id = self.progress.add_task(description, total=total)
        self.progress.start()

    def update(self, done: int) -> None:
        self.progress.update(self.id, completed=done)

    def close(self, done: int) -> None:
        task = self.progress.tasks[0]
        if task.total is None:
            self.progress.update(self.id, total=1, completed=1)
        else:
            self.progress.update(self.id, completed=done)
        self.progress.stop()


class _NotebookView:
    """One line of a notebook cell's output, replaced in place (``update_display``)."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        from IPython.display import display

        self.description, self.total, self.unit = description, total, unit
        self.start = time.monotonic()
        self.last = 0.0
        self.handle = display(self._bundle(0, False), raw=True, display_id=True)

    def _bundle(self, done: int, finished: bool) -> dict[str, str]:
        import html

        fmt = fmt_bytes if self.unit == "bytes" else fmt_count
        took = f"{time.monotonic() - self.start:.1f} s"
        if self.total:
            pct = min(100, 100 * done // self.total)
            text = f"{self.description}: {pct}% {fmt(done)} / {fmt(self.total)}, {took}"
            bar = f'<progress value="{pct}" max="100"></progress> '
        else:
            text = f"{self.description}: {'done' if finished else 'running'}, {took}"
            bar = "" if finished else "<progress></progress> "
        return {"text/plain": text, "text/html": f"{bar}<code>{html.escape(text)}</code>"}

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= NOTEBOOK_INTERVAL:
            self.last = now
            self.handle.update(self._bundle(done, False), raw=True)

    def close(self, done: int) -> None:
        self.handle.update(self._bundle(done, True), raw=True)
