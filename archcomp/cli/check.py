"""``archcomp check``: validate specs (schema, graph, symbolic shapes); one line per spec."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from archcomp.base.errors import SpecError, UsageError
from archcomp.cli.common import add_params_flag, command, load_program_arg, overrides, spec_help
from archcomp.cli.output import info, print_diagnostics, print_error

if TYPE_CHECKING:
    from archcomp.ir import Graph


def _configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC", help=spec_help("spec files to check"))
    add_params_flag(p)
    p.add_argument("--json", action="store_true", help="print results as JSON")


def cmd_check(args: argparse.Namespace) -> int:
    from archcomp.ir.dims import fmt_shape

    params = overrides(args)
    status = 0
    results: list[dict[str, Any]] = []
    for spec in args.specs:
        try:
            g = _check_spec(spec, params, args.json, results)
            if g is None:
                continue
        except UsageError as exc:  # the next specs are still checked; exit 2 at the end
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
            named = "" if g.name == spec else f" {g.name}:"  # 'gpt2: ok: 31 nodes', not twice
            info(f"{spec}: ok:{named} {len(g.nodes)} nodes; inputs {ins}; outputs {outs}")
    if args.json:
        print(json.dumps(results, indent=2))
    return status


def _check_spec(
    spec: str, params: dict[str, Any], as_json: bool, results: list[dict[str, Any]]
) -> Graph | None:
    """The checked graph of SPEC (an artifact: the spec it embeds); None for a block library
    (reported here)."""
    from archcomp.passes.pipeline import check_program

    if spec.endswith(".safetensors"):
        from archcomp.api import graph_of

        return graph_of(spec, params)

    prog = load_program_arg(spec)
    if not prog.spec.nodes:
        names = ", ".join(prog.blocks) or "none"
        if not as_json:
            info(f"{spec}: ok: library of {len(prog.blocks)} blocks ({names})")
        results.append({"spec": spec, "ok": True, "blocks": list(prog.blocks)})
        return None
    return check_program(prog, params)


cmd_check.configure = _configure_check  # type: ignore[attr-defined]
command("check", "validate specs: schema, graph and shapes")(cmd_check)
