"""What the subcommands share: their registration, the -p and --depth flags, -p parsing,
reading SPEC (a file, the bare name of a shipped spec, or ``-`` for stdin)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archcomp.frontend.loader import Program
    from archcomp.ir import Graph

STDIN = "-"
STDIN_NAME = "<stdin>"

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str) -> Callable[[Handler], Handler]:
    """Register a sub-command; ``configure`` is the handler's ``configure`` attribute."""

    def wrap(fn: Handler) -> Handler:
        COMMANDS[name] = (fn, getattr(fn, "configure", lambda p: None), help)
        return fn

    return wrap


def add_params_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a param of the spec (repeatable), e.g. -p d_model=256",
    )


def depth_type(all_value: int | None) -> Callable[[str], int | None]:
    """argparse type for --depth: a number >= 0, or 'all' (given as ``all_value``)."""

    def parse(text: str) -> int | None:
        if text == "all":
            return all_value
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number or 'all', found '{text}'"
            ) from None
        if value < 0:
            raise argparse.ArgumentTypeError("must be >= 0")
        return value

    return parse


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``-p NAME=VALUE`` flags as a mapping of param overrides."""
    from archcomp.frontend.build import parse_override

    out: dict[str, Any] = {}
    for text in args.param:
        name, value = parse_override(text)
        out[name] = value
    return out


def add_depth_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--depth",
        type=depth_type(None),
        default=1,
        metavar="N",
        help="collapse blocks nested deeper than N in the table (0: top level only; "
        "'all': every node; default 1)",
    )


def spec_path(text: str) -> Path:
    """A SPEC argument: a bare name (no slash, no dot: ``gpt2``) is the shipped spec of that name,
    anything else a file (``./gpt2.yaml``); an unknown name is a :class:`UsageError`."""
    from archcomp.frontend.library import is_bare_name, shipped_spec

    return shipped_spec(text) if is_bare_name(text) else Path(text)


def load_program_arg(spec: str) -> Program:
    """SPEC as a loaded program: a file, a shipped spec's name, or ``-``: the text on stdin
    (imports relative to the working directory). A missing or unreadable file is a usage
    error."""
    from archcomp.frontend.build import load_source
    from archcomp.frontend.loader import load_program
    from archcomp.frontend.source import MAX_BYTES, decode

    if spec != STDIN:
        return load_source(spec_path(spec))
    data = sys.stdin.buffer.read(MAX_BYTES + 1)
    return load_program(STDIN_NAME, text=decode(data, STDIN_NAME), base_dir=Path.cwd())


def load_graph_arg(spec: str, params: dict[str, Any]) -> Graph:
    """SPEC (a file, an artifact's embedded spec, or ``-``) checked by every pass, with ``-p``
    overrides."""
    from archcomp.passes.pipeline import check_program, load_graph

    if spec.endswith(".safetensors"):
        from archcomp.api import graph_of

        return graph_of(spec, params)
    if spec != STDIN:
        return load_graph(spec_path(spec), params)
    return check_program(load_program_arg(spec), params)


def spec_help(what: str) -> str:
    return (
        f"{what}: a file, a shipped spec's name (archcomp specs lists them), an artifact "
        "(.safetensors: the spec it embeds), or '-' for stdin"
    )
