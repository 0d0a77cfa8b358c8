"""``archcomp draw``: a spec -> a diagram in the style of the Transformer paper's Figure 1.

Exit status: 0 written; 1 spec errors; 2 usage errors (including a diagram too large to lay
out); 4 Graphviz missing (the DOT source is written instead), failed or timed out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from archcomp.cli.common import (
    SPEC_HELP,
    add_params_flag,
    command,
    depth_type,
    overrides,
    spec_path,
)

EXIT_RENDER = 4


def _configure(p: argparse.ArgumentParser) -> None:
    from archcomp.backends.graphviz.plan import DEFAULT_MAX_BOXES
    from archcomp.backends.graphviz.render import DEFAULT_TIMEOUT, FORMATS

    p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    p.add_argument(
        "-o", "--output", metavar="FILE", help="output file (default: diagrams/<name>.<format>)"
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: from -o's suffix, else svg)",
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
        type=depth_type(1_000_000),
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
    add_params_flag(p)


def cmd_draw(args: argparse.Namespace) -> int:
    from archcomp.backends.graphviz import draw, save
    from archcomp.backends.graphviz.render import FORMATS, RenderError
    from archcomp.base.errors import UsageError

    if args.depth is not None and args.depth < 0:
        raise UsageError(f"--depth must be >= 0, found {args.depth}")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    fmt = args.format
    suffix = Path(args.output).suffix.lstrip(".").lower() if args.output else ""
    if fmt and suffix in FORMATS and suffix != fmt:
        raise UsageError(f"--format {fmt} conflicts with -o {args.output}: name the file .{fmt}")
    if fmt is None and args.output:
        suffix = Path(args.output).suffix.lstrip(".")
        fmt = suffix if suffix else None
        if fmt is not None and fmt not in ("svg", "png", "pdf", "dot"):
            raise UsageError(f"cannot tell the format from '{args.output}': use --format")
    fmt = fmt or "svg"
    diagram = draw(
        spec_path(args.spec),
        overrides(args),
        expand=[name.strip() for arg in args.expand for name in arg.split(",") if name.strip()],
        depth=args.depth,
        shapes=args.shapes,
        param_counts=args.params,
        direction=args.direction,
        dropout=args.dropout,
        max_boxes=args.max_nodes,
    )
    out = Path(args.output) if args.output else Path("diagrams") / f"{diagram.name}.{fmt}"
    try:
        save(diagram, out, fmt, timeout=args.timeout)
    except RenderError as exc:
        if exc.missing:
            print(f"archcomp draw: wrote {out.with_suffix('.dot')}", file=sys.stderr)
        print(f"archcomp draw: error: {exc}", file=sys.stderr)
        return EXIT_RENDER
    print(f"wrote {out}")
    return 0


cmd_draw.configure = _configure  # type: ignore[attr-defined]
command("draw", "draw a spec as a diagram (SVG, PNG, PDF or DOT) with Graphviz")(cmd_draw)
