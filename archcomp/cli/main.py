"""The ``archcomp`` command line. Exit status: 0 success, 1 spec errors, 2 usage errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from archcomp.base.errors import SpecError, UsageError

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str) -> Callable[[Handler], Handler]:
    """Register a sub-command; ``configure`` is the handler's ``configure`` attribute."""

    def wrap(fn: Handler) -> Handler:
        _COMMANDS[name] = (fn, getattr(fn, "configure", lambda p: None), help)
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
    from archcomp.frontend.build import parse_override

    out: dict[str, Any] = {}
    for text in args.param:
        name, value = parse_override(text)
        out[name] = value
    return out


def _configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files to check")
    add_params_flag(p)
    p.add_argument("--json", action="store_true", help="print results as JSON")


def cmd_check(args: argparse.Namespace) -> int:
    from archcomp.frontend.build import load_source
    from archcomp.ir.dims import fmt_shape

    params = overrides(args)
    status = 0
    results: list[dict[str, Any]] = []
    for spec in args.specs:
        try:
            prog = load_source(Path(spec))
            if not prog.spec.nodes:
                names = ", ".join(prog.blocks) or "none"
                if not args.json:
                    print(f"{spec}: ok: library of {len(prog.blocks)} blocks ({names})")
                results.append({"spec": spec, "ok": True, "blocks": list(prog.blocks)})
                continue
            from archcomp.frontend.build import build_graph

            g = build_graph(prog, params)
        except SpecError as exc:
            status = 1
            if args.json:
                results.append(
                    {"spec": spec, "ok": False, "errors": [d.to_json() for d in exc.diagnostics]}
                )
            else:
                print(exc.format(), file=sys.stderr)
            continue
        ins = ", ".join(f"{n} {fmt_shape(i.type.shape)}" for n, i in g.inputs.items())
        outs = ", ".join(
            f"{n} {fmt_shape(t.shape) if t else '?'}" for n, t in g.output_types.items()
        )
        if args.json:
            results.append(
                {
                    "spec": spec,
                    "ok": True,
                    "name": g.name,
                    "nodes": len(g.nodes),
                    "inputs": {n: i.type.to_json() for n, i in g.inputs.items()},
                    "outputs": {n: t.to_json() if t else None for n, t in g.output_types.items()},
                }
            )
        else:
            print(f"{spec}: ok: {g.name}: {len(g.nodes)} nodes; inputs {ins}; outputs {outs}")
    if args.json:
        print(json.dumps(results, indent=2))
    return status


cmd_check.configure = _configure_check  # type: ignore[attr-defined]
command("check", "validate specs: schema, graph and shapes")(cmd_check)


def cmd_schema(args: argparse.Namespace) -> int:
    from archcomp.frontend.schema import json_schema
    from archcomp.ops import all_ops

    schema = json_schema({n: o.args for n, o in all_ops().items()})
    print(json.dumps(schema, indent=2, sort_keys=False))
    return 0


command("schema", "print the JSON Schema of the spec format")(cmd_schema)


def cmd_ops(args: argparse.Namespace) -> int:
    from archcomp.ops import all_ops

    if args.markdown:
        print(ops_markdown(), end="")
        return 0
    for name, op in all_ops().items():
        ports = ", ".join(
            p.name + ("..." if p.variadic else "") + ("?" if p.optional else "") for p in op.inputs
        )
        fields = ", ".join(op.args.model_fields)
        print(f"{name:30} in: {ports:36} args: {fields or '-'}")
    return 0


def ops_markdown() -> str:
    """docs/ops.md: every op with its ports, results and arguments, from the registry."""
    from pydantic_core import PydanticUndefined

    from archcomp.ops import all_ops

    lines = ["# Ops", "", "Generated by `archcomp ops --markdown > docs/ops.md`; do not edit.", ""]
    for name, op in all_ops().items():
        lines += [f"## `{name}`", "", (op.doc or op.args.__doc__ or "").strip(), ""]
        ports = ", ".join(
            f"`{p.name}`"
            + (" (list)" if p.variadic else "")
            + (" (optional)" if p.optional else "")
            + (f" (default: `{p.default}`)" if p.default else "")
            for p in op.inputs
        )
        lines += [f"- inputs: {ports}", f"- results: {', '.join(f'`{r}`' for r in op.results)}"]
        lines += [f"- drawn as: {op.style.label} ({op.style.family})", ""]
        if op.args.model_fields:
            lines += ["| argument | type | default | meaning |", "| --- | --- | --- | --- |"]
            for fname, f in op.args.model_fields.items():
                default = "required" if f.default is PydanticUndefined else f"`{f.default!r}`"
                if f.default is None:
                    default = "inferred" if fname in _INFERRED else "none"
                ann = _type_text(f.annotation)
                desc = (f.description or "").replace("|", "\\|")
                lines.append(f"| `{fname}` | {ann} | {default} | {desc} |")
            lines.append("")
    return "\n".join(lines)


def _type_text(tp: Any) -> str:
    import typing

    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return " \\| ".join(_type_text(a) for a in args if a is not type(None))
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_text(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


_INFERRED = {
    "in_features",
    "in_channels",
    "input_size",
    "embed_dim",
    "kdim",
    "vdim",
    "num_features",
    "normalized_shape",
    "d_model",
}


def _configure_ops(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown", action="store_true", help="print docs/ops.md")


cmd_ops.configure = _configure_ops  # type: ignore[attr-defined]
command("ops", "list the ops and their arguments")(cmd_ops)


def _load_backends() -> None:
    """The build, summary and draw sub-commands register themselves when imported."""
    from archcomp.cli import build, draw  # noqa: F401


def parser() -> argparse.ArgumentParser:
    _load_backends()
    from archcomp import __version__

    p = argparse.ArgumentParser(
        prog="archcomp",
        description="Declarative neural-network architectures: check, build and draw YAML specs.",
    )
    p.add_argument("--version", action="version", version=f"archcomp {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, configure, help) in _COMMANDS.items():
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
        return _COMMANDS[args.command][0](args)
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
