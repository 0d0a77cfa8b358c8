"""``archcomp specs``: the specs and block libraries that ship with archcomp."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from archcomp.cli.common import command


def _configure_specs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list as a JSON object")


def shipped() -> dict[str, list[dict[str, Any]]]:
    """Each shipped model spec (name, description, params) and block library (name, blocks)."""
    from archcomp.frontend.library import block_libraries, model_specs
    from archcomp.frontend.loader import load_program
    from archcomp.frontend.schema import ParamDecl

    def entry(name: str, path: Path) -> tuple[dict[str, Any], Any]:
        spec = load_program(path).spec
        return {"name": name, "description": spec.description or "", "path": str(path)}, spec

    specs = []
    for name, path in model_specs().items():
        item, spec = entry(name, path)
        params = {}
        for pname, value in spec.params.items():
            decl = value if isinstance(value, ParamDecl) else ParamDecl(default=value)
            params[pname] = {"default": decl.default, "doc": decl.doc or ""}
        specs.append({**item, "params": params})
    libraries = []
    for name, path in block_libraries().items():
        item, spec = entry(name, path)
        libraries.append({**item, "blocks": list(spec.blocks)})
    return {"specs": specs, "libraries": libraries}


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def cmd_specs(args: argparse.Namespace) -> int:
    found = shipped()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    width = max(len(e["name"]) for group in found.values() for e in group) + 2
    pad = " " * (width + 2)
    print('Specs (a bare name: archcomp check NAME, archcomp.build("NAME")):')
    for e in found["specs"]:
        print(f"  {e['name']:{width}}{e['description']}")
        params = ", ".join(f"{n}={_value(p['default'])}" for n, p in e["params"].items())
        print(f"{pad}params: {params or 'none'}")
    print("\nBlock libraries (imports: [{library: NAME, blocks: [...]}]):")
    for e in found["libraries"]:
        print(f"  {e['name']:{width}}{e['description']}")
        print(f"{pad}blocks: {', '.join(e['blocks'])}")
    return 0


cmd_specs.configure = _configure_specs  # type: ignore[attr-defined]
command("specs", "list the specs and block libraries that ship with archcomp")(cmd_specs)
