"""The imported spec as YAML text that reads like a hand-written one: one flow mapping a node."""

from __future__ import annotations

from typing import Any

import yaml


def _flow(v: Any) -> str:
    if isinstance(v, str) and v.startswith("${"):
        return f'"{v}"'  # an expression: quoted, as flow mappings need
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list) and any(isinstance(x, str) and x.startswith("${") for x in v):
        return "[" + ", ".join(_flow(x) for x in v) + "]"
    text: str = yaml.safe_dump(v, default_flow_style=True, width=10**6)
    return text.removesuffix("\n...\n").strip()


def _wrapped(prefix: str, mapping: dict[str, Any], width: int = 100) -> list[str]:
    """``prefix{k: v, ...}`` on lines of at most ``width`` where the entries allow, each
    continuation under the first entry (as the shipped specs wrap a long node)."""
    items = [f"{k}: {_flow(x)}" for k, x in mapping.items()]
    out, cur = [], prefix + "{" + items[0]
    for item in items[1:]:
        if len(cur) + len(item) + 3 <= width:
            cur += ", " + item
        else:
            out.append(cur + ",")
            cur = " " * (len(prefix) + 1) + item
    return [*out, cur + "}"]


def _body(lines: list[str], body: dict[str, Any], indent: str) -> None:
    lines.append(f"{indent}nodes:")
    for n in body["nodes"]:
        lines += _wrapped(f"{indent}  - ", {k: v for k, v in n.items() if not k.startswith("_")})
    outs = body["outputs"]
    lines.append(f"{indent}outputs: {_flow(outs)}")


def spec_text(
    name: str,
    inputs: dict[str, dict[str, Any]],
    dims: dict[str, int],
    blocks: dict[str, dict[str, Any]],
    body: dict[str, Any],
    source: str = "",
    params: dict[str, Any] | None = None,
) -> str:
    """The whole spec: header, dims, inputs, blocks (innermost first), nodes and outputs."""
    from archcomp.importer.unread import mark_unread

    blocks = {k: mark_unread(b) for k, b in blocks.items()}
    body = mark_unread(body)
    lines = [
        f"# Imported from {source} by archcomp import --hf."
        if source.startswith("transformers'")
        else f"# Imported from the torch module {source or name} by archcomp.import_module.",
        "archcomp: 1",
        f"name: {name}",
    ]
    if params:
        lines += _wrapped("params: ", params)
    if dims:
        lines.append(f"dims: {_flow(dims)}")
    lines.append("inputs:")
    lines += [f"  {k}: {_flow(v)}" for k, v in inputs.items()]
    if blocks:
        lines.append("blocks:")
        for bname, b in blocks.items():
            lines.append(f"  {bname}:" + (f"  # {b['shapes']}" if b.get("shapes") else ""))
            if b.get("params"):
                lines += _wrapped("    params: ", b["params"])
            lines.append(f"    inputs: {_flow(b['inputs'])}")
            _body(lines, b, "    ")
    outs = body["outputs"]
    _body(lines, body | {"outputs": outs if isinstance(outs, dict) else {"out": outs}}, "")
    return "\n".join(lines) + "\n"
