"""``archcomp draw``: a spec -> a diagram in the style of the Transformer paper's Figure 1.

Exit status: 0 written; 1 spec errors; 2 usage errors (including a diagram too large to lay
out); 4 Graphviz missing (the DOT source is written instead), failed or timed out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from archcomp.cli.common import (
    STDIN,
    add_params_flag,
    command,
    depth_type,
    load_graph_arg,
    overrides,
    spec_help,
)
from archcomp.cli.output import info, print_error

EXIT_RENDER = 4


def _configure(p: argparse.ArgumentParser) -> None:
    from archcomp.backends.graphviz.boxes import DEFAULT_MAX_BOXES, DEFAULT_MAX_EDGES, DEPTH_ALL
    from archcomp.backends.graphviz.render import DEFAULT_MEMORY, DEFAULT_TIMEOUT, FORMATS

    p.add_argument("spec", metavar="SPEC", help=spec_help("the spec file to draw"))
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="output file (default: diagrams/<name>.<format>; '-': stdout)",
    )
    p.add_argument(
        "--format",
        choices=(*FORMATS, "html"),
        help="output format (default: from -o's suffix, else svg); html: the interactive page "
        "of archcomp view",
    )
    p.add_argument(
        "--expand",
        action="append",
        default=[],
        metavar="BLOCK",
        help="open a block, block instance or composite op (e.g. multi_head_attention, "
        "scaled_dot_product_attention) to draw its inside; repeatable, or comma-separated",
    )
    p.add_argument(
        "--depth",
        type=depth_type(DEPTH_ALL),
        metavar="N",
        help="open nested blocks down to depth N (0: all closed; 'all': every block)",
    )
    p.add_argument("--shapes", action="store_true", help="label edges with tensor shapes")
    p.add_argument("--params", action="store_true", help="add parameter counts to boxes")
    p.add_argument(
        "--direction",
        choices=("auto", "BT", "LR"),
        default="auto",
        help="flow: BT bottom to top (the paper), LR left to right (LeNet); auto picks",
    )
    p.add_argument("--dropout", action="store_true", help="draw dropout (left out by default)")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"time limit for Graphviz's layout (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--max-nodes",
        type=int,
        default=DEFAULT_MAX_BOXES,
        metavar="N",
        help=f"refuse diagrams with more boxes than this (default {DEFAULT_MAX_BOXES})",
    )
    p.add_argument(
        "--max-edges",
        type=int,
        default=DEFAULT_MAX_EDGES,
        metavar="N",
        help="refuse diagrams whose edges cross more ranks than this in all (each edge counts "
        f"the ranks it spans; default {DEFAULT_MAX_EDGES})",
    )
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        default=f"{DEFAULT_MEMORY >> 30}GiB",
        help=f"memory limit for Graphviz's layout (default {DEFAULT_MEMORY >> 30}GiB)",
    )
    add_params_flag(p)


def cmd_draw(args: argparse.Namespace) -> int:
    from archcomp.backends.graphviz import draw, save
    from archcomp.backends.graphviz.render import FORMATS, RenderError
    from archcomp.base.errors import UsageError

    if args.depth is not None and args.depth < 0:
        raise UsageError(f"--depth must be >= 0, found {args.depth}")
    from archcomp.backends.graphviz.render import check_limits
    from archcomp.backends.torch.devices import parse_bytes

    memory = parse_bytes(args.max_memory)
    try:
        check_limits(args.timeout, memory)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    fmt = args.format
    to_stdout = args.output == STDIN
    suffix = Path(args.output).suffix.lstrip(".").lower() if args.output and not to_stdout else ""
    if fmt and suffix in (*FORMATS, "html") and suffix != fmt:
        raise UsageError(f"--format {fmt} conflicts with -o {args.output}: name the file .{fmt}")
    if fmt is None and args.output and not to_stdout:
        suffix = Path(args.output).suffix.lstrip(".")
        fmt = suffix if suffix else None
        if fmt is not None and fmt not in ("svg", "png", "pdf", "dot", "html"):
            raise UsageError(f"cannot tell the format from '{args.output}': use --format")
    fmt = fmt or "svg"
    if to_stdout and fmt in ("png", "pdf") and sys.stdout.isatty():
        raise UsageError(f"-o - would write {fmt} bytes to the terminal: redirect or pipe it")
    if fmt == "html":
        return _draw_html(args, to_stdout)
    opened = bool(args.expand) or bool(args.depth)
    diagram = draw(
        load_graph_arg(args.spec, overrides(args)),
        None,
        expand=[name.strip() for arg in args.expand for name in arg.split(",") if name.strip()],
        depth=args.depth,
        shapes=args.shapes,
        param_counts=args.params,
        direction=args.direction,
        dropout=args.dropout,
        max_boxes=args.max_nodes,
        max_edges=args.max_edges,
    )
    if to_stdout:
        from archcomp.backends.graphviz.render import run_dot

        try:
            data = run_dot(diagram.source, fmt, timeout=args.timeout)
        except RenderError as exc:  # nothing reaches stdout: all of the diagram or none
            print_error("draw", f"{exc}{_hint(exc, opened, None, args.timeout)}")
            return EXIT_RENDER
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    out = Path(args.output) if args.output else Path("diagrams") / f"{diagram.name}.{fmt}"
    try:
        save(diagram, out, fmt, timeout=args.timeout, memory=memory)
    except RenderError as exc:
        dot = out.with_suffix(".dot")
        if exc.missing or exc.timed_out:
            print(f"archcomp draw: wrote {dot}", file=sys.stderr)
        print_error("draw", f"{exc}{_hint(exc, opened, dot, args.timeout)}")
        return EXIT_RENDER
    info(f"wrote {out}")
    return 0


def _draw_html(args: argparse.Namespace, to_stdout: bool) -> int:
    """``--format html``: the page of ``archcomp view`` (blocks open by click, not --depth)."""
    from archcomp.base.errors import UsageError
    from archcomp.cli.view import write_view

    flags = (("--depth", args.depth), ("--shapes", args.shapes), ("--params", args.params))
    for flag, value in flags:
        if value:
            raise UsageError(
                f"{flag} does not apply to --format html: the page opens blocks by click and "
                "shows shapes and parameters on hover"
            )
    graph = load_graph_arg(args.spec, overrides(args))
    if to_stdout:
        from archcomp.api import view

        names = [n.strip() for a in args.expand for n in a.split(",") if n.strip()]
        sys.stdout.write(view(graph, expand=names, direction=args.direction).html)
        return 0
    out = Path(args.output) if args.output else Path("diagrams") / f"{graph.name}.html"
    return write_view(graph, out, args)


def _hint(exc: Exception, opened: bool, dot: Path | None, timeout: float) -> str:
    """What to do after a layout timeout, for a drawing with blocks opened or without."""
    if not getattr(exc, "timed_out", False):
        return ""
    fixes = []
    if opened:
        fixes.append("open fewer blocks (fewer --expand, a lower --depth)")
    fixes.append(f"raise --timeout (now {timeout:g} s)")
    if dot is not None:
        fixes.append(
            f"lay the DOT file out without a limit: dot -Tsvg {dot} -o {dot.with_suffix('.svg')}"
        )
    return "\n  = hint: " + "; or ".join(fixes)


cmd_draw.configure = _configure  # type: ignore[attr-defined]
command("draw", "draw a spec as a diagram (SVG, PNG, PDF, DOT or HTML) with Graphviz")(cmd_draw)
