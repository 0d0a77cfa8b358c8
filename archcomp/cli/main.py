"""The ``archcomp`` command line: the parser, dispatch, and what each failure exits with.

Exit status (:data:`EXIT_CODES`, the README's table): 0 success, 1 spec errors, 2 usage
errors, 3 internal errors, 4 Graphviz missing or failing (``draw``), 130 interrupted,
141 the reader of stdout left.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from archcomp.base.errors import SpecError, UsageError, did_you_mean

# Each subcommand module registers itself in COMMANDS when imported.
from archcomp.cli import (  # noqa: F401
    build,
    check,
    completion,
    convert,
    draw,
    export,
    generate,
    importing,
    ops,
    schema,
    specs,
    summary,
    view,
)
from archcomp.cli.common import COMMANDS
from archcomp.cli.output import QUIET, print_diagnostics, print_error

# --help lists the pipeline's commands first, then the reference ones; any other after them.
HELP_ORDER = (
    "check",
    "summary",
    "build",
    "convert",
    "export",
    "generate",
    "import",
    "draw",
    "view",
    "specs",
    "schema",
    "ops",
    "completion",
)
EXIT_CODES = {
    0: "success",
    1: "an invalid spec",
    2: "a usage error",
    3: "an internal error (a bug in archcomp)",
    4: "Graphviz missing, failing or timed out (draw, view)",
    130: "interrupted (Ctrl-C)",
    141: "the reader of stdout went away (a closed pipe)",
}
GLOBAL_FLAGS = ("--debug", "--quiet", "-q")


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for misspelt options, in archcomp's error style."""

    words: Sequence[str] = ()  # the command line being parsed (set by main)

    def error(self, message: str) -> NoReturn:
        import re

        self.print_usage(sys.stderr)
        m = re.match(r"unrecognized arguments: (\S+)", message)
        hint = ""
        if m and m.group(1).startswith("-"):
            hint = _flag_hint(self, m.group(1).split("=")[0])
        print_error(self.prog.removeprefix("archcomp").strip() or None, message + hint)
        sys.exit(2)


def _flag_hint(p: argparse.ArgumentParser, flag: str) -> str:
    """'; did you mean ...' among the flags of the command being run, or, for a flag of other
    commands only (draw --force), which commands take it."""
    subs = _subcommands(p)
    command = next((w for w in getattr(p, "words", ()) if w in subs), None)
    own = subs[command] if command else p
    flags = [s for a in own._actions for s in a.option_strings]
    every = _subcommands(parser())  # all configured: main's parser has only the one it runs
    owners = [name for name, sp in every.items() if flag in _flags(sp)]
    if flag not in flags and owners:
        where = f"not of {command}" if command else "given after the command"
        return f"; {flag} is an option of {', '.join(sorted(owners))}, {where}"
    guess = did_you_mean(flag, flags)
    return f"; {guess}" if guess else ""


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parsers of ``p``'s subcommands by name."""
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def parser(only: Sequence[str] | None = None) -> _Parser:
    """The command line's parser; with ``only``, just those subcommands get their options
    (each ``configure`` may import what its defaults come from: Graphviz for ``draw``)."""
    p = _Parser(
        prog="archcomp",
        description="Declarative neural-network architectures: check, build and draw YAML specs.",
    )
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    p.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
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
        sp.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP
        )
        if only is None or name in only:
            configure(sp)
    return p


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked (reading the
    package metadata costs more than the rest of ``--help``)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> NoReturn:
        from archcomp.base.version import __version__

        print(f"archcomp {__version__}")  # on stdout, as argparse's own version action
        parser.exit()


def _needed(words: Sequence[str]) -> list[str] | None:
    """The subcommands whose options parsing ``words`` needs: the one named; none for
    ``archcomp --help`` alone; all (None) otherwise (a misspelt flag's hint lists them)."""
    for word in words:
        if word in COMMANDS:
            return [word]
    return [] if any(w in ("-h", "--help", "--version") for w in words) else None


def _flags(p: argparse.ArgumentParser) -> list[str]:
    """Every option string of ``p`` and of its subcommands' parsers."""
    out: list[str] = []
    for a in p._actions:
        out += a.option_strings
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                out += _flags(sp)
    return out


QUIET_HELP = "print errors only: no progress, no 'wrote FILE' lines, no build table"


def _unknown_command(argv: Sequence[str]) -> str | None:
    """The error for a first word that is no command (argparse would list every choice)."""
    for word in argv:
        if word in GLOBAL_FLAGS:
            continue
        if word.startswith("-") or word in COMMANDS:
            return None
        guess = did_you_mean(word, COMMANDS)
        return f"unknown command '{word}'" + (f"; {guess}" if guess else "; see archcomp --help")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    finally:
        if argv is None:  # the process's own command line: it exits next
            # Python's exit collects once more over every object still alive (a second or
            # more after a 20,000-node build); frozen, they are left to the exit's teardown.
            gc.freeze()


def _run(argv: Sequence[str] | None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (archcomp completion)
        import argcomplete

        argcomplete.autocomplete(parser())
    p = parser(_needed(words))
    unknown = _unknown_command(words)
    if unknown is not None:
        print_error(None, unknown)
        return 2
    p.words = words
    try:
        args = p.parse_args(words)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command is None:
        p.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False))
    quiet = bool(getattr(args, "quiet", False))
    from archcomp.base import gcpause, progress

    QUIET[0] = quiet
    progress.set_default(False if quiet else None)
    # the process's own command line, a short process: torch's objects frozen once imported
    gcpause.freeze_imports(argv is None)
    try:
        return COMMANDS[args.command][0](args)
    except SpecError as exc:
        print_diagnostics(exc)
        return 1
    except UsageError as exc:
        print_error(args.command, str(exc))
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
        print_error(
            args.command,
            f"cannot write or read{where}: {exc.strerror or exc}; existing output files are "
            "unchanged",
        )
        return 2
    except Exception as exc:
        if debug:
            raise
        print_error(
            args.command,
            f"{type(exc).__name__}: {exc}\n"
            "  this is a bug in archcomp, not in your spec; rerun with --debug for the "
            "traceback and report it",
            kind="internal error",
        )
        return 3
    finally:
        QUIET[0] = False
        progress.set_default(None)
        gcpause.freeze_imports(False)
