"""Notebook display of lower layers' objects by higher layers' code.

A checked ``Graph`` (ir) and a built model (backends/torch) show in a notebook as the
interactive view, which only the api layer can assemble (it needs both backends). The api
registers it here when ``archcomp`` is imported; the objects ask for it in ``_repr_html_``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

_view: Callable[[object], str] | None = None


def set_html_view(fn: Callable[[object], str]) -> None:
    """Install the function that turns a Graph or a built model into the view's HTML."""
    global _view
    _view = fn


def html_view(obj: object) -> str | None:
    """The view of ``obj`` as notebook HTML; None (the notebook then shows the text repr)
    when none is installed or it cannot be drawn, e.g. without Graphviz."""
    if _view is None:
        return None
    try:
        return _view(obj)
    except Exception as exc:  # a repr must not raise: the text repr stands in
        logging.getLogger("archcomp").info("no interactive view: %s", exc)
        return None
