"""Pausing Python's cyclic garbage collector while a stage builds many live objects.

Matching 200,000 checkpoint keys, or reading a mapping of 100,000 rules, makes hundreds of
thousands of small objects that all stay alive until the stage returns. The collector
traverses them again at each of its generations' thresholds, which here doubles the cost of
the stage and helps nothing: none of them is garbage yet. :func:`paused` turns it off for
the stage and back on (if it was on) afterwards; the memory a stage holds is bounded by its
input, which is itself bounded (header and file size limits).

Turned back on, the collector would still traverse every object the stage made, at its first
young collection (they are all young, and the allocation count is far past the threshold).
So the outermost pause hands them to the oldest generation on the way out
(``gc.freeze()`` then ``gc.unfreeze()``: two list splices, no traversal), where the survivors
of young collections would have gone anyway; cyclic garbage among them is freed at the next
full collection. When objects are frozen already (a program that froze them before
``fork``), that is left alone and the collector is simply turned back on.

The command line's process is short and what its imports make lives to its end: there
(:func:`freeze_imports`), torch is imported with the collector paused and what is alive then
is frozen (``gc.freeze``), so that no later pass walks torch's hundreds of thousands of
objects again (about 0.2 s of CPU in ``archcomp summary``). A program that imports archcomp
keeps its collector as it is. In that process a paused stage's objects are frozen too on the
way out (unfreezing would thaw torch's with them).
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
            if _FREEZE[0]:  # the command line's process: frozen too, as torch's objects are
                gc.freeze()
            elif gc.get_freeze_count() == 0:
                gc.freeze()  # every tracked object out of the young generations...
                gc.unfreeze()  # ...into the oldest one, untraversed
            gc.enable()
