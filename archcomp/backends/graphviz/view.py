"""The interactive HTML view: one self-contained page (no network) with the figure, pan and
zoom, blocks that open and close in place, each box's details and a search box.

The page holds the figure in every state a reader can reach by clicking, pre-rendered by
Graphviz: the default figure; then, breadth first, each state with one more of the blocks or
composite ops it draws closed opened (what ``--expand`` opens); and the figure at depth
``all``. At most ``max_states`` states are rendered (a click towards one left out says so).
Every text from the spec reaches the page as JSON with ``<``, ``>`` and ``&`` escaped and is
set with ``textContent``; the SVGs are Graphviz's, whose labels :func:`emit.esc` escaped.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from archcomp.backends.graphviz import style as st
from archcomp.backends.graphviz.boxes import Box, DrawOptions
from archcomp.backends.graphviz.emit import to_graphviz
from archcomp.backends.graphviz.plan import Planner, planned
from archcomp.backends.graphviz.render import (
    DEFAULT_MEMORY,
    DEFAULT_TIMEOUT,
    RenderError,
    run_dot,
)
from archcomp.backends.graphviz.view_page import PAGE
from archcomp.base.errors import UsageError
from archcomp.base.fileio import write_bytes_atomic
from archcomp.base.text import visible
from archcomp.base.units import fmt_bytes
from archcomp.frontend.library import SPECS_DIR
from archcomp.ir import Graph, Node
from archcomp.ir.dims import fmt_shape
from archcomp.ir.graph import Origin

MAX_STATES = 24
ALL = "*"  # the key of the state at depth all (no block or op is named "*")
COPIES = "copies:"  # a key's "copies:layers": the repeat "layers" drawn with every copy
DEPTH_ALL = 1_000_000


@dataclass(frozen=True)
class Figures:
    """A node's figures from the summary, at its dims."""

    shape: str
    parameters: int
    macs: int
    memory: int  # bytes of parameters and buffers
    activations: int | None = None


@dataclass
class _State:
    key: list[str]
    svg: str
    boxes: dict[str, dict[str, Any]]
    frames: dict[str, dict[str, Any]]
    expandable: set[str]


def view_html(
    g: Graph,
    figures: Mapping[str, Figures] | None = None,
    *,
    opts: DrawOptions | None = None,
    dims: str = "",
    max_states: int = MAX_STATES,
    timeout: float = DEFAULT_TIMEOUT,
    memory: int = DEFAULT_MEMORY,
) -> str:
    """The page for ``g``; ``figures`` (node name -> :class:`Figures`) from the summary,
    ``dims`` says at which sizes (``B=1, T=2048``)."""
    if max_states < 1:
        raise UsageError(f"the view needs at least 1 state, found max_states={max_states}")
    opts = opts or DrawOptions()
    if not opts.collapse:
        opts = replace(opts, collapse=repeated_blocks(g))
    states, info, truncated = _states(g, figures or {}, opts, max_states, timeout, memory)
    data = {
        "name": g.name,
        "dims": dims,
        "limit": max_states,
        "truncated": truncated,
        "states": [
            {"key": s.key, "svg": s.svg, "boxes": s.boxes, "frames": s.frames} for s in states
        ],
        "info": info,
    }
    fill = {"TITLE": html.escape(g.name, quote=True), "DATA": script_json(data)}
    return re.sub(r"\$(TITLE|DATA)", lambda m: fill[m.group(1)], PAGE)


def repeated_blocks(g: Graph) -> tuple[str, ...]:
    """The blocks drawn repeated (``N×``): the view's first figure draws them closed."""
    return tuple(
        sorted(
            {
                s.block
                for n in g.nodes.values()
                for s in n.scopes
                if s.repeat is not None and s.name != n.name
            }
        )
    )


def script_json(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(ch, esc)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _states(
    g: Graph,
    figures: Mapping[str, Figures],
    opts: DrawOptions,
    max_states: int,
    timeout: float,
    memory: int,
) -> tuple[list[_State], dict[str, dict[str, Any]], bool]:
    """Breadth first from the default figure; the depth-all figure last (when it fits)."""
    info: dict[str, dict[str, Any]] = {}
    base = frozenset(opts.expand)
    queue: list[frozenset[str]] = [base]
    seen = {base}
    out: list[_State] = []
    truncated = False
    room = max(1, max_states - 1)  # one left for the depth-all figure
    while queue:
        names = queue.pop(0)
        if len(out) >= room:
            truncated = True
            break
        here = replace(
            opts,
            expand=tuple(sorted(n for n in names if not n.startswith(COPIES))),
            copies=tuple(sorted(n[len(COPIES) :] for n in names if n.startswith(COPIES))),
        )
        state = _render(g, figures, here, info, timeout, memory, first=not out)
        if state is None:
            if not out:  # the default figure itself cannot be drawn: say why
                planned(g, here)
            continue
        out.append(state)
        if here.copies:
            continue  # every copy drawn: a figure to look at, not to open further
        # blocks and ops first, then the repeats unrolled (the least needed)
        for name in sorted(state.expandable - names, key=lambda n: (n.startswith(COPIES), n)):
            nxt = names | {name}
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    if max_states < 2:
        return out, info, truncated
    every = _render(g, figures, replace(opts, expand=(), depth=DEPTH_ALL), info, timeout, memory)
    if every is not None:
        every.key = [ALL]
        out.append(every)
    return out, info, truncated


def _render(
    g: Graph,
    figures: Mapping[str, Figures],
    opts: DrawOptions,
    info: dict[str, dict[str, Any]],
    timeout: float,
    memory: int,
    first: bool = False,
) -> _State | None:
    """One state: its SVG, what each box and frame stands for; None when it cannot be drawn
    (an --expand that opens nothing there, past the size limits, or a layout that failed or
    ran past ``timeout``)."""
    try:
        p = planned(g, opts)
    except UsageError:
        return None
    try:
        svg = run_dot(to_graphviz(p.d, ids=True).source, "svg", timeout=timeout, memory=memory)
    except RenderError as exc:
        if exc.missing or first:
            raise  # no Graphviz, or the first figure itself: the view cannot be written
        return None  # a figure past the limits is left out, as past the size limits
    text = svg.decode()
    text = text[text.find("<svg") :]
    boxes = {f"b{i}": _box_entry(p, b, figures, info) for i, b in enumerate(p.d.boxes.values())}
    frames = {f"f{i}": _frame_entry(p, fid) for i, fid in enumerate(p.d.frames)}
    offered = {f["copies"] for f in frames.values() if f.get("copies")}
    key = sorted([*opts.expand, *(COPIES + c for c in opts.copies)])
    return _State(key, text, boxes, frames, set(p.expandable) | offered)


def _scope_of(p: Planner, sid: str) -> Any:
    for n in p.g.nodes.values():
        for s in n.scopes:
            if p._canon(s.name, n.scopes) == sid:
                return s
    return None


def _frame_entry(p: Planner, fid: str) -> dict[str, Any]:
    """What clicking a frame closes (the --expand name that opened it), and its anchor: the
    id of the box it is drawn as when closed."""
    kind, _, rest = fid.partition(":")
    entry: dict[str, Any] = {"anchor": rest.rstrip("/"), "collapse": None}
    if kind == "block":
        s = _scope_of(p, rest)
        names = {s.block, rest, *([s.label] if s.label else [])} if s is not None else set()
        entry["collapse"] = sorted(names & p.expand) or None
    elif kind == "repeat":
        blocks = {
            sc.block
            for n in p.g.nodes.values()
            for sc in n.scopes
            if sc.repeat is not None and p._canon(sc.name.rsplit(".", 1)[0], n.scopes) == rest
        }
        entry["collapse"] = sorted(blocks & p.expand) or None
        if rest in p.opts.copies:  # every copy drawn: a click folds them back into copy 0
            entry["collapse"] = [COPIES + rest]
        elif entry["collapse"] is None and p.opts.depth is None and _folded(p, rest):
            entry["copies"] = COPIES + rest  # a click shows every copy
    elif kind == "figure" and rest.count("/") == 1:
        node = p.g.nodes.get(rest.rstrip("/"))
        if node is not None:
            entry["collapse"] = sorted({node.op.name, node.name} & p.expand) or None
    return entry


def _folded(p: Planner, base: str) -> bool:
    """Whether the repeat ``base`` (a canonical instance name) is drawn with fewer copies
    than it has (copy 0 standing for all, or one copy per run)."""
    drawn = len(set(p.runs.get(base, {0: 0}).values()))
    for n in p.g.nodes.values():
        for sc in n.scopes:
            if sc.repeat is not None and sc.name.rsplit(".", 1)[0] == base:
                return sc.repeat > drawn
    return False


def _box_entry(
    p: Planner, b: Box, figures: Mapping[str, Figures], info: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """A box's anchor, details key, the --expand name that opens it ("opens"), and the node names it
    stands for (what the search box finds)."""
    entry: dict[str, Any] = {"anchor": b.id, "opens": None, "info": None, "names": []}
    if b.kind == "block" and b.id in p.collapsed_scope:
        s = p.collapsed_scope[b.id]
        nodes = p.collapsed_ops[b.id]
        copy = s.repeat is not None and s.name.rsplit(".", 1)[0] in p.opts.copies
        entry["opens"] = s.block if s.block in p.expandable and not copy else None
        entry["names"] = [b.id, *(n.name for n in nodes)]
        key = f"{'copy' if copy else 'block'}:{b.id}"
        if key not in info:
            info[key] = _block_info(b, s.block, nodes, figures, _top(p.g), not copy)
        entry["info"] = key
        return entry
    if b.kind in ("input", "output"):
        name = b.id.split("/", 1)[1]
        entry["names"] = [name]
        key = b.id
        if key not in info:
            info[key] = _io_info(p.g, b, name)
        entry["info"] = key
        return entry
    node = p.g.nodes.get(b.id) or p.g.nodes.get(b.id.split("/", 1)[0])
    if node is None:
        return entry
    entry["names"] = [node.name]
    if node.op.style.figure is not None and b.id == node.name and node.op.name in p.expandable:
        entry["opens"] = node.op.name
    if node.name not in info:
        info[node.name] = _node_info(node, figures.get(node.name), _top(p.g))
    entry["info"] = node.name
    return entry


def _where(origin: Origin, top: Path | None) -> str:
    """``specs/blocks/llama.yaml:12``: where a thing was written, the file shown relative to
    the package (a shipped spec) or to the folder of the spec drawn (``top``), never as an
    absolute path that would show the reader's home directory layout."""
    loc = origin.doc.loc(origin.path)
    return f"{visible(shown_file(origin.doc.path, origin.doc.file, top))}:{loc.line}"


def shown_file(path: Path | None, name: str, top: Path | None) -> str:
    """A spec file's name for a page: under the package's specs, ``specs/...``; under the
    drawn spec's folder ``top``, relative to it; otherwise only its file name."""
    if path is None:
        return name if not Path(name).is_absolute() else Path(name).name
    path = path.resolve()
    for base, prefix in ((SPECS_DIR.resolve(), "specs/"), (top, "")):
        if base is not None and path.is_relative_to(base):
            return prefix + path.relative_to(base).as_posix()
    return path.name


def _top(g: Graph) -> Path | None:
    """The folder of the spec drawn (None for one read from text)."""
    path = g.root.doc.path
    return path.resolve().parent if path is not None else None


def _copies(node: Node) -> str | None:
    reps = [s for s in node.scopes if s.repeat is not None]
    if not reps:
        return None
    return "; ".join(f"{s.name.rsplit('.', 1)[0]}: copy {s.index} of {s.repeat}" for s in reps)


def _shape(node: Node) -> str:
    if len(node.outputs) == 1:
        return fmt_shape(next(iter(node.outputs.values())).shape)
    return ", ".join(f"{k} {fmt_shape(t.shape)}" for k, t in node.outputs.items())


def _args(node: Node) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in node.args.model_dump(by_alias=True).items():
        if v is None:
            continue
        out[k] = v if isinstance(v, str) else json.dumps(v, default=str)
    return out


def _figure_fields(f: Figures | None) -> dict[str, Any]:
    if f is None:
        return {}
    out = {
        "shape_at": f.shape,
        "params": f"{f.parameters:,} ({st.fmt_count(f.parameters)})",
        "macs": f"{f.macs:,} ({st.fmt_count(f.macs)})",
        "memory": fmt_bytes(f.memory),
    }
    if f.activations is not None:
        out["activations"] = fmt_bytes(f.activations)
    return out


def _node_info(node: Node, f: Figures | None, top: Path | None) -> dict[str, Any]:
    return {
        "title": node.label or node.local_id,
        "name": node.name,
        "op": node.op.name,
        "args": _args(node),
        "shape": _shape(node),
        **_figure_fields(f),
        "source": _where(node.origin, top),
        "copies": _copies(node),
    }


def _block_info(
    b: Box,
    block: str,
    nodes: list[Node],
    figures: Mapping[str, Figures],
    top: Path | None,
    opens: bool = True,
) -> dict[str, Any]:
    found = [figures[n.name] for n in nodes if n.name in figures]
    total = (
        Figures(
            found[-1].shape,
            sum(f.parameters for f in found),
            sum(f.macs for f in found),
            sum(f.memory for f in found),
            None,
        )
        if found
        else None
    )
    return {
        "title": b.label,
        "name": b.id,
        "op": f"block {block} ({len(nodes)} nodes{'; click to open' if opens else ''})",
        "args": {},
        "shape": _shape(nodes[-1]) if nodes else "",
        **_figure_fields(total),
        "source": _where(nodes[0].origin, top) if nodes else "",
        "copies": _copies(nodes[0]) if nodes else None,
    }


def _io_info(g: Graph, b: Box, name: str) -> dict[str, Any]:
    if b.kind == "input":
        inp = g.inputs[name]
        return {
            "title": name,
            "name": name,
            "op": "input",
            "args": {"dtype": inp.type.dtype},
            "shape": fmt_shape(inp.type.shape),
            "source": _where(inp.origin, _top(g)),
        }
    t = g.output_types.get(name)
    return {
        "title": name,
        "name": name,
        "op": "output",
        "args": {},
        "shape": fmt_shape(t.shape) if t else "?",
    }


class View:
    """The interactive view of a model: ``.html`` is the page; ``save(path)`` writes it; in a
    notebook it shows in place (an ``<iframe>`` holding the page)."""

    def __init__(self, name: str, page: str):
        self.name = name
        self.html = page

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        write_bytes_atomic(out, self.html.encode())
        return out

    def _repr_html_(self) -> str:
        return iframe(self.html)

    def __repr__(self) -> str:
        return f"View({self.name!r}: {len(self.html):,} characters of HTML)"


def iframe(page: str, height: int = 640) -> str:
    """The page inside a sandboxed ``<iframe srcdoc>``: its script and style stay in it."""
    return (
        f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
        f'style="width:100%;height:{height}px;border:1px solid #ccc"></iframe>'
    )
