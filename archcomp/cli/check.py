"""``archcomp check``: validate specs (schema, graph, symbolic shapes); one line per spec."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from archcomp.base.errors import SpecError
from archcomp.cli.common import SPEC_HELP, add_params_flag, command, overrides, spec_path


def _configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC", help=SPEC_HELP)
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
            prog = load_source(spec_path(spec))
            if not prog.spec.nodes:
                names = ", ".join(prog.blocks) or "none"
                if not args.json:
                    print(f"{spec}: ok: library of {len(prog.blocks)} blocks ({names})")
                results.append({"spec": spec, "ok": True, "blocks": list(prog.blocks)})
                continue
            from archcomp.passes.pipeline import check_program

            g = check_program(prog, params)
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
