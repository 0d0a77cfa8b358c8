"""``archcomp schema``: the JSON Schema of the spec format, for editors."""

from __future__ import annotations

import argparse
import json

from archcomp.cli.common import command


def cmd_schema(args: argparse.Namespace) -> int:
    from archcomp.frontend.schema import json_schema
    from archcomp.ops import all_ops

    schema = json_schema({n: o.args for n, o in all_ops().items()})
    print(json.dumps(schema, indent=2, sort_keys=False))
    return 0


command("schema", "print the JSON Schema of the spec format")(cmd_schema)
