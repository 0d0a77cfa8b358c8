"""A drawing plan -> a ``graphviz.Digraph`` in the style of the Transformer paper's figures.

Every piece of text goes through :func:`html_label`, which escapes it: a user's ``label:`` can
never inject DOT or HTML. Clusters are numbered in order of first appearance and nodes are
emitted in plan order, so the same spec gives byte-identical DOT.
"""

from __future__ import annotations

import html
from collections import defaultdict
from itertools import pairwise

import graphviz

from archcomp.backends.graphviz import style as st
from archcomp.backends.graphviz.boxes import Box, Drawing, Frame
from archcomp.backends.graphviz.render import Diagram
from archcomp.base.text import visible

FONT = "Helvetica"


def esc(text: str) -> str:
    """Text for an HTML-like label: entities escaped, line breaks as <BR/>, and control, bidi
    and zero-width characters shown as escapes (``\u202e``), so they reach neither DOT nor
    the SVG as themselves."""
    text = text.replace("\r\n", "\n").replace("\t", " ")
    # Graphviz expands \N, \G, \L even inside HTML labels; a doubled backslash is one backslash.
    return "<BR/>".join(
        html.escape(visible(line), quote=True).replace("\\", "\\\\") for line in text.split("\n")
    )


def html_label(main: str, small: str | None = None, note: str | None = None) -> str:
    out = esc(main)
    if small:
        out += f'<BR/><FONT POINT-SIZE="10">{esc(small)}</FONT>'
    if note:
        out += f'<BR/><FONT POINT-SIZE="9" COLOR="#555555">{esc(note)}</FONT>'
    return f"<{out}>"


def _box_attrs(b: Box, lr: bool) -> dict[str, str]:
    label = html_label(b.label, b.caption, b.note)
    if b.kind in ("input", "output"):
        return {"label": label, "shape": "plaintext", "style": "", "fontsize": "13"}
    if b.kind == "joint":  # where an edge from the column before enters a stage column
        return {"label": "", "shape": "point", "width": "0.01", "height": "0.01"}
    if b.kind in ("circle", "wave"):
        attrs = {
            "label": html_label(b.label),
            "shape": "circle",
            "style": "filled",
            "fillcolor": "#ffffff",
            "fixedsize": "true",
            "width": "0.32",
            "fontsize": "16" if b.kind == "wave" else "14",
        }
        if b.xlabel:
            attrs["xlabel"] = f'<<FONT POINT-SIZE="11">{esc(b.xlabel)}</FONT>>'

        return attrs
    attrs = {"label": label, "fillcolor": st.colour(b.family)}
    if not lr and b.kind != "part":
        attrs["width"] = "1.9"
    return attrs


_FRAME_BASE: dict[str, str] = {
    "style": "rounded",
    "color": st.FRAME_LINE,
    "fillcolor": "none",
    "peripheries": "1",
    "labeljust": "l",
    "labelloc": "t",  # with rankdir=BT Graphviz puts "t" at the bottom, as the paper does
    "fontsize": "11",
    "margin": "8",
}

_FRAME_STYLE: dict[str, dict[str, str]] = {
    "repeat": {
        "style": "rounded,filled",
        "fillcolor": st.FRAME_FILL,
        "color": st.FRAME_LINE,
        "labeljust": "l",
        "fontsize": "14",
        "margin": "14",
    },
    "block": {
        "style": "rounded,dashed",
        "color": st.FRAME_LINE,
        "labeljust": "l",
        "fontsize": "11",
        "margin": "10",
    },
    "group": {"peripheries": "0", "margin": "4"},
    "figure": {
        "style": "rounded,dashed",
        "color": "#c98a3c",
        "labeljust": "l",
        "fontsize": "11",
        "margin": "10",
    },
    "stack": {
        "style": "rounded,filled",
        "fillcolor": "#e4e4e4",
        "color": st.FRAME_LINE,
        "labeljust": "r",
        "fontsize": "12",
        "margin": "5",
    },
    "stack_inner": {
        "style": "rounded,filled",
        "fillcolor": st.FRAME_FILL,
        "color": st.FRAME_LINE,
        "margin": "8",
    },
}


def to_graphviz(d: Drawing, *, ids: bool = False) -> Diagram:
    """The drawing as DOT. ``ids``: give each box the SVG id ``b<i>`` (its index in
    ``d.boxes``) and each frame ``f<i>`` (its index in ``d.frames``), for the HTML view."""
    lr = d.direction == "LR"
    box_ids = {b: f"b{i}" for i, b in enumerate(d.boxes)} if ids else {}
    frame_ids = {f: f"f{i}" for i, f in enumerate(d.frames)} if ids else {}

    def node_attrs(b: Box) -> dict[str, str]:
        attrs = _box_attrs(b, lr)
        if ids:
            attrs["id"] = box_ids[b.id]
        return attrs

    dot = Diagram(
        name=d.name,
        graph_attr={
            "rankdir": "TB" if d.rows else d.direction,  # rows: each a rank, left to right
            "fontname": FONT,
            "nodesep": "0.35" if lr else "0.3",
            "ranksep": "0.45" if lr else "0.32",
            "newrank": "true",
        },
        node_attr={
            "shape": "box",
            "style": "rounded,filled",
            "fontname": FONT,
            "fontsize": "12",
            "color": st.LINE,
            "margin": "0.12,0.06",
            "height": "0.4",
        },
        edge_attr={"color": st.LINE, "arrowsize": "0.6", "fontname": FONT, "fontsize": "9"},
    )
    children: dict[str | None, list[Frame]] = defaultdict(list)
    for f in d.frames.values():
        children[f.parent].append(f)
    members: dict[str | None, list[Box]] = defaultdict(list)
    for b in d.boxes.values():
        if b.kind not in ("input", "output"):
            members[b.frame].append(b)
    numbers: dict[str, int] = {}

    def fill(g: graphviz.Digraph, fid: str | None) -> None:
        for b in members[fid]:
            g.node(b.id, **node_attrs(b))
        for f in children[fid]:
            numbers[f.id] = len(numbers)
            with g.subgraph(name=f"cluster_{numbers[f.id]}") as sub:
                # Clusters inherit their parent's attributes: set every one each time.
                attrs = {**_FRAME_BASE, **_FRAME_STYLE[f.kind]}
                attrs["label"] = html_label(f.label) if f.label and f.kind != "group" else ""
                if ids:
                    attrs["id"] = frame_ids[f.id]
                sub.attr(**attrs)
                fill(sub, f.id)

    for rank, kind in (("min", "input"), ("max", "output")):
        ends = [b for b in d.boxes.values() if b.kind == kind]
        if ends:
            with dot.subgraph() as s:
                if not d.rows:  # a wrapped strip keeps them in its first and last rows
                    s.attr(rank=rank)
                for b in ends:
                    s.node(b.id, **node_attrs(b))
    fill(dot, None)
    for group in [*d.same_rank, *d.rows]:
        with dot.subgraph() as s:
            s.attr(rank="same")
            for box_id in group:
                s.node(box_id)
    links = {(e.src, e.dst) for e in d.edges if e.kind == "link"}
    if d.columns:  # stages side by side: their feet on one rank, left to right
        with dot.subgraph() as s:
            s.attr(rank="same")
            for box_id in d.columns:
                s.node(box_id)
        for left, right in pairwise(d.columns):
            if (left, right) not in links:  # a gutter's foot -> its joint is drawn
                dot.edge(left, right, style="invis")
    wraps = {(row[-1], nxt[0]) for row, nxt in pairwise(d.rows)}
    for row, nxt in pairwise(d.rows):  # each row starts under the one before
        dot.edge(row[0], nxt[0], style="invis", weight="10")
    for e in d.edges:
        attrs: dict[str, str] = {}
        if (e.src, e.dst) in wraps:
            attrs["constraint"] = "false"
        if e.kind == "link":  # a piece of a line that goes on from a point: no arrowhead
            attrs["arrowhead"] = "none"
        if e.label:
            attrs["label"] = html_label(e.label)
        if e.side:  # beside the frame it bypasses, into the sum's side
            attrs.update({"tailport": "e", "headport": "e"})
        if e.kind == "cross":
            attrs["constraint"] = "false"
        if e.kind == "loop":
            side = "n" if lr else "e"
            attrs.update({"dir": "forward", "headport": side, "tailport": side})
        dot.edge(e.src, e.dst, **attrs)
    return dot
