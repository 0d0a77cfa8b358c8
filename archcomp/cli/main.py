"""The ``archcomp`` command line: the parser, dispatch, and what each failure exits with.

Exit status: 0 success, 1 spec errors, 2 usage errors, 3 internal errors, 4 Graphviz missing
or failing (``draw``), 130 interrupted, 141 the reader of stdout left.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from archcomp.base.errors import SpecError, UsageError

# Each subcommand module registers itself in COMMANDS when imported.
from archcomp.cli import build, check, draw, ops, schema, specs, summary  # noqa: F401
from archcomp.cli.common import COMMANDS

# --help lists the pipeline's commands first, then the reference ones; any other after them.
HELP_ORDER = ("check", "summary", "build", "draw", "specs", "schema", "ops")


def parser() -> argparse.ArgumentParser:
    from archcomp.base.version import __version__

    p = argparse.ArgumentParser(
        prog="archcomp",
        description="Declarative neural-network architectures: check, build and draw YAML specs.",
    )
    p.add_argument("--version", action="version", version=f"archcomp {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    order = {n: i for i, n in enumerate(HELP_ORDER)}
    for name in sorted(COMMANDS, key=lambda n: (order.get(n, len(order)), n)):
        _, configure, help = COMMANDS[name]
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks of internal errors",
        )
        configure(sp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command is None:
        p.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False))
    try:
        return COMMANDS[args.command][0](args)
    except SpecError as exc:
        print(exc.format(), file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"archcomp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `archcomp schema | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:  # the machine's fault (disk full, no permission), not a bug
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"archcomp {args.command}: error: cannot write or read{where}: "
            f"{exc.strerror or exc}; existing output files are unchanged",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        if debug:
            raise
        print(
            f"archcomp {args.command}: internal error: {type(exc).__name__}: {exc}\n"
            "  this is a bug in archcomp, not in your spec; rerun with --debug for the "
            "traceback and report it",
            file=sys.stderr,
        )
        return 3
