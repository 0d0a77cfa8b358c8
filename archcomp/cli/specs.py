"""``archcomp specs``: the specs and block libraries that ship with archcomp."""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

from archcomp.cli.common import command


def _configure_specs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list as a JSON object")


def shipped() -> dict[str, list[dict[str, Any]]]:
    """Each shipped model spec (name, description, params) and block library (name, blocks)."""
    from archcomp.frontend.library import block_libraries, model_specs
    from archcomp.frontend.loader import load_program
    from archcomp.frontend.params import resolve
    from archcomp.frontend.schema import ParamDecl

    def entry(name: str, path: Path) -> tuple[dict[str, Any], Any]:
        spec = load_program(path).spec
        return {"name": name, "description": spec.description or "", "path": str(path)}, spec

    specs = []
    for name, path in model_specs().items():
        item, spec = entry(name, path)
        values = resolve(spec.params, {}, report=lambda name, problem: None)  # ${...} evaluated
        params = {}
        for pname, value in spec.params.items():
            decl = value if isinstance(value, ParamDecl) else ParamDecl(default=value)
            params[pname] = {"default": values.get(pname, decl.default), "doc": decl.doc or ""}
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
    columns = max(shutil.get_terminal_size((100, 24)).columns, width + 40)
    print('Specs (a bare name: archcomp check NAME, archcomp.build("NAME")):')
    for e in found["specs"]:
        params = ", ".join(f"{n}={_value(p['default'])}" for n, p in e["params"].items())
        _entry(e["name"], width, columns, e["description"], f"params: {params or 'none'}")
    print("\nBlock libraries (imports: [{library: NAME, blocks: [...]}]):")
    for e in found["libraries"]:
        _entry(e["name"], width, columns, e["description"], f"blocks: {', '.join(e['blocks'])}")
    return 0


def _entry(name: str, width: int, columns: int, *paragraphs: str) -> None:
    """``name`` and its paragraphs, wrapped to ``columns`` under a hanging indent."""
    pad = " " * (width + 2)
    first = f"  {name:{width}}"
    for text in paragraphs:
        for line in textwrap.wrap(text, columns, initial_indent=first, subsequent_indent=pad):
            print(line)
        first = pad


cmd_specs.configure = _configure_specs  # type: ignore[attr-defined]
command("specs", "list the specs and block libraries that ship with archcomp")(cmd_specs)
