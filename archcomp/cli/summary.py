"""``archcomp summary``: the per-node table of shapes, params and MACs, nothing allocated."""

from __future__ import annotations

import argparse
import json

from archcomp.cli.common import (
    SPEC_HELP,
    add_depth_flag,
    add_params_flag,
    command,
    overrides,
    spec_path,
)


def _configure_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    add_params_flag(p)
    p.add_argument("--json", action="store_true", help="print the summary as a JSON object")
    add_depth_flag(p)


def cmd_summary(args: argparse.Namespace) -> int:
    from archcomp.api import summary

    s = summary(spec_path(args.spec), overrides(args))
    if args.json:
        print(json.dumps(s.to_json(), indent=2))
    else:
        print(s.table(args.depth))
    return 0


cmd_summary.configure = _configure_summary  # type: ignore[attr-defined]
command("summary", "per-node table of shapes, params and MACs, without allocating weights")(
    cmd_summary
)
