"""``archcomp view``: a spec or artifact -> one self-contained interactive HTML page.

Exit status: 0 written; 1 spec errors; 2 usage errors; 4 Graphviz missing, failed or timed
out (nothing is written).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from archcomp.cli.common import add_params_flag, command, load_graph_arg, overrides, spec_help
from archcomp.cli.output import info, print_error
from archcomp.cli.summary import add_dims_flag

EXIT_RENDER = 4


def _configure(p: argparse.ArgumentParser) -> None:
    from archcomp.backends.graphviz.render import DEFAULT_TIMEOUT
    from archcomp.backends.graphviz.view import MAX_STATES

    p.add_argument("spec", metavar="SPEC", help=spec_help("the spec to view"))
    p.add_argument(
        "-o", "--output", metavar="FILE", help="the page to write (default: diagrams/<name>.html)"
    )
    add_params_flag(p)
    add_dims_flag(p, "the shapes, MACs and memory are shown at")
    p.add_argument(
        "--expand",
        action="append",
        default=[],
        metavar="BLOCK",
        help="open these blocks or composite ops in the first figure (as draw --expand)",
    )
    p.add_argument(
        "--direction", choices=("auto", "BT", "LR"), default="auto", help="flow, as in draw"
    )
    p.add_argument("--dropout", action="store_true", help="draw dropout (left out by default)")
    p.add_argument(
        "--max-states",
        type=int,
        default=MAX_STATES,
        metavar="N",
        help=f"pre-render at most N figures (open/closed combinations; default {MAX_STATES})",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"time limit for each Graphviz layout (default {DEFAULT_TIMEOUT:g})",
    )


def cmd_view(args: argparse.Namespace) -> int:
    from archcomp.base.errors import UsageError

    if args.output and Path(args.output).suffix.lower() != ".html":
        raise UsageError(f"-o {args.output}: the view is an HTML page; name the file .html")
    graph = load_graph_arg(args.spec, overrides(args))
    out = Path(args.output) if args.output else Path("diagrams") / f"{graph.name}.html"
    return write_view(graph, out, args)


def write_view(graph: Any, out: Path, args: argparse.Namespace) -> int:
    """Write the view of ``graph`` to ``out`` (also ``draw --format html``); the exit status."""
    from archcomp.api import view
    from archcomp.backends.graphviz.render import RenderError, check_limits
    from archcomp.base.errors import UsageError

    try:
        check_limits(args.timeout, 64 << 20)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if getattr(args, "max_states", 1) < 1:
        raise UsageError(f"--max-states must be at least 1, found {args.max_states}")
    try:
        page = view(
            graph,
            dims={k: v for d in getattr(args, "dims", []) for k, v in d.items()},
            expand=[name.strip() for arg in args.expand for name in arg.split(",") if name.strip()],
            direction=args.direction,
            dropout=args.dropout,
            max_states=getattr(args, "max_states", None),
            timeout=args.timeout,
        )
    except RenderError as exc:
        print_error("view", str(exc))
        return EXIT_RENDER
    page.save(out)
    info(f"wrote {out}")
    return 0


cmd_view.configure = _configure  # type: ignore[attr-defined]
command(
    "view",
    "an interactive HTML page of a spec: pan, zoom, open blocks in place, node details, search",
)(cmd_view)
