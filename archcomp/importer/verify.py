"""The imported spec checked before it is returned: what the importer wrote but archcomp
cannot check (a slice bound read from a tensor's size, an example input of the wrong rank)
is a refusal, never a spec that exits 0 and fails later."""

from __future__ import annotations

from archcomp.base.errors import SpecError


def check_problems(text: str) -> list[str]:
    """Each error ``archcomp check`` finds in ``text``, the written spec's line quoted; none
    where it checks."""
    from archcomp.passes.pipeline import load_graph

    try:
        load_graph(text)
    except SpecError as e:
        return [
            f"the spec it would write does not check: {_where(d.source_line)}"
            f"{(f'node {d.node!r}: ' if d.node else '')}{d.message}"
            for d in e.diagnostics
        ] or [f"the spec it would write does not check: {e}"]
    return []


def _where(line: str | None) -> str:
    return f"at `{line.strip()}`: " if line and line.strip() else ""
