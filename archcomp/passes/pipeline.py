"""The pipeline: a spec (path, YAML text or mapping) -> the front end -> every pass -> a checked
:class:`Graph`. :func:`load_graph` is the one entry point every backend starts from.

The passes run in :data:`PASSES` order over the graph the front end made; each reports into one
:class:`Reporter`. A pass whose ``gate`` is set stops the pipeline when it fails, because the
passes after it need what it establishes (shapes need an acyclic graph).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from archcomp.base.errors import Diagnostic, Reporter, SpecError
from archcomp.base.gcpause import paused
from archcomp.frontend.build import SpecSource, load_source, to_graph
from archcomp.frontend.loader import Program
from archcomp.ir import Graph
from archcomp.passes.inits import check_init_pass
from archcomp.passes.shapes import infer_shapes
from archcomp.passes.structure import check_structure
from archcomp.passes.ties import check_ties


@dataclass(frozen=True)
class Pass:
    """One pass over the graph: ``run`` reports into the reporter (and may return False)."""

    name: str
    run: Callable[[Graph, Reporter], bool | None]
    gate: bool = False  # when it fails, the passes after it do not run


PASSES: tuple[Pass, ...] = (
    Pass("structure", check_structure, gate=True),  # cycles, unused nodes; topological order
    Pass("shapes", infer_shapes),  # Node.outputs from each op's shape rule
    Pass("ties", check_ties),  # tied weights exist and agree in shape
    Pass("inits", check_init_pass),  # initializers, planned into node.meta
)


def load_graph(
    source: SpecSource, params: Mapping[str, Any] | None = None, *, base_dir: Path | None = None
) -> Graph:
    """Load, validate and shape-check a spec; raise :class:`SpecError` with every error.

    ``source`` is a path, a YAML string (anything containing a newline or ``archcomp:``), or
    an already-parsed mapping.
    """
    with paused():
        prog = load_source(source, base_dir=base_dir)
        return check_program(prog, params or {})


def check_program(prog: Program, overrides: Mapping[str, Any]) -> Graph:
    """The front end's graph of ``prog``, checked by every pass. An error on a line that
    uses an overridden param notes the override (``-p h=7``), which the spec's text does not
    show."""
    rep = Reporter()
    try:
        g = to_graph(prog, overrides, rep)
        run_passes(g, rep)
    except SpecError as exc:
        if not overrides:
            raise
        noted = [_note_overrides(d, overrides) for d in exc.diagnostics]
        if noted and noted == exc.diagnostics:  # no line names one: say they were applied
            given = ", ".join(f"{k}={_shown(v)}" for k, v in overrides.items())
            noted[0] = replace(noted[0], notes=(*noted[0].notes, f"checked with {given}"))
        raise SpecError(noted, exc.omitted) from None
    return g


def _note_overrides(d: Diagnostic, overrides: Mapping[str, Any]) -> Diagnostic:
    """``d`` with a note naming each override its source line's ``${...}`` uses."""
    used: set[str] = set()
    for expr in re.findall(r"\$\{([^}]*)\}", d.source_line or ""):
        used |= set(re.findall(r"[A-Za-z_]\w*", expr))
    given = [f"{name}={_shown(value)}" for name, value in overrides.items() if name in used]
    if not given:
        return d
    note = f"with the override {', '.join(given)} (-p on the command line, params= in Python)"
    return replace(d, notes=(*d.notes, note))


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def run_passes(g: Graph, rep: Reporter) -> None:
    """Run :data:`PASSES` over ``g``; raise :class:`SpecError` if any reported an error."""
    for p in PASSES:
        ok = p.run(g, rep)
        if p.gate and ok is False:
            break
    rep.raise_if_failed()


def model_graph(model: object, params: Mapping[str, Any] | None = None) -> Graph | None:
    """The checked graph of a model built by archcomp (an ``ArchModule``: it carries the spec
    texts and overrides it was built from, else its normalized spec), ``params`` applied on
    top; None for any other object."""
    from archcomp.frontend.loader import load_program

    source = getattr(model, "source", None)
    if isinstance(source, Mapping) and {"main", "files"} <= source.keys():
        with paused():
            prog = load_program(source["main"], embedded=dict(source["files"]), label="model")
            return check_program(prog, {**source.get("params", {}), **(params or {})})
    spec = getattr(model, "spec", None)
    if isinstance(spec, Mapping) and "archcomp" in spec and not isinstance(model, Mapping):
        return load_graph(spec, params)
    return None
