"""Which of a module's parametrized tests this pytest session runs, so that a module fixture
that runs a corpus in the canary process runs only the cases the selected tests judge (one
case picked with ``-k`` or a node id then costs one case, not the whole corpus)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest


def selected_params(request: pytest.FixtureRequest, argname: str) -> dict[str, list[Any]]:
    """For each test function of the requesting module that this session runs (after ``-k``,
    ``-m``, node ids and deselection), the values its ``argname`` parameter takes; a test
    without that parameter maps to an empty list."""
    chosen: dict[str, list[Any]] = defaultdict(list)
    for item in request.session.items:
        if getattr(item, "module", None) is not request.module:
            continue
        name = getattr(item, "originalname", item.name)
        params = getattr(getattr(item, "callspec", None), "params", {})
        values = chosen[name]
        if argname in params:
            values.append(params[argname])
    return chosen
