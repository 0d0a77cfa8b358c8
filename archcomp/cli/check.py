"""``archcomp check``: validate specs (schema, graph, symbolic shapes); one line per spec."""

from __future__ import annotations

import argparse
import json
from typing import Any

from archcomp.base.errors import SpecError
from archcomp.cli.common import add_params_flag, command, load_program_arg, overrides, spec_help
from archcomp.cli.output import info, print_diagnostics, print_error


def _configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC", help=spec_help("spec files to check"))
    add_params_flag(p)
    p.add_argument("--json", action="store_true", help="print results as JSON")


def cmd_check(args: argparse.Namespace) -> int:
    from archcomp.frontend.source import SpecFileError
    from archcomp.ir.dims import fmt_shape

    params = overrides(args)
    status = 0
    results: list[dict[str, Any]] = []
    for spec in args.specs:
        try:
            prog = load_program_arg(spec)
            if not prog.spec.nodes:
                names = ", ".join(prog.blocks) or "none"
                if not args.json:
                    info(f"{spec}: ok: library of {len(prog.blocks)} blocks ({names})")
                results.append({"spec": spec, "ok": True, "blocks": list(prog.blocks)})
                continue
            from archcomp.passes.pipeline import check_program

            g = check_program(prog, params)
        except SpecFileError as exc:  # the next specs are still checked; exit 2 at the end
            status = 2
            if args.json:
                results.append({"spec": spec, "ok": False, "usage_error": str(exc)})
            else:
                print_error("check", str(exc))
            continue
        except SpecError as exc:
            status = max(status, 1)
            if args.json:
                errors = [d.to_json() for d in exc.diagnostics]
                entry: dict[str, Any] = {"spec": spec, "ok": False, "errors": errors}
                if exc.omitted:  # past the errors kept per spec, only counted
                    entry["errors_not_shown"] = exc.omitted
                results.append(entry)
            else:
                print_diagnostics(exc)
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
            info(f"{spec}: ok: {g.name}: {len(g.nodes)} nodes; inputs {ins}; outputs {outs}")
    if args.json:
        print(json.dumps(results, indent=2))
    return status


cmd_check.configure = _configure_check  # type: ignore[attr-defined]
command("check", "validate specs: schema, graph and shapes")(cmd_check)
