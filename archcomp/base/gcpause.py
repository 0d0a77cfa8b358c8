"""Pausing Python's cyclic garbage collector while a stage builds many live objects.

Matching 200,000 checkpoint keys, or reading a mapping of 100,000 rules, makes hundreds of
thousands of small objects that all stay alive until the stage returns. The collector
traverses them again at each of its generations' thresholds, which here doubles the cost of
the stage and helps nothing: none of them is garbage yet. :func:`paused` turns it off for
the stage and back on (if it was on) afterwards; the memory a stage holds is bounded by its
input, which is itself bounded (header and file size limits).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


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
