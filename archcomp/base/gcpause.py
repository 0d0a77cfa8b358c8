"""Pausing Python's cyclic garbage collector while a stage builds many live objects.

Matching 200,000 checkpoint keys, or reading a mapping of 100,000 rules, makes hundreds of
thousands of small objects that all stay alive until the stage returns. The collector
traverses them again at each of its generations' thresholds, which here doubles the cost of
the stage and helps nothing: none of them is garbage yet. :func:`paused` turns it off for
the stage and back on (if it was on) afterwards; the memory a stage holds is bounded by its
input, which is itself bounded (header and file size limits).

The command line's process is short and what its imports make lives to its end: there
(:func:`freeze_imports`), torch is imported with the collector paused and what is alive then
is frozen (``gc.freeze``), so that no later pass walks torch's hundreds of thousands of
objects again (about 0.2 s of CPU in ``archcomp summary``). A program that imports archcomp
keeps its collector as it is.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_FREEZE = [False]


def freeze_imports(on: bool = True) -> None:
    """Called by the command line: :func:`importing` then freezes what it imported."""
    _FREEZE[0] = on


@contextmanager
def importing() -> Iterator[None]:
    """A large import (torch's): in the command line's process, with the collector paused,
    and everything alive afterwards frozen (kept out of every later collection)."""
    if not _FREEZE[0]:
        yield
        return
    with paused():
        yield
        gc.freeze()


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the ``with`` block; reference counting still frees."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
