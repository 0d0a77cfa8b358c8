"""The drawing plan's data: boxes, nested frames and edges, before any Graphviz syntax."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from archcomp.ir.drawing import Style

Direction = Literal["auto", "BT", "LR"]
DEFAULT_MAX_BOXES = 2500
DEPTH_ALL = 1_000_000  # --depth all: every block open, shape plumbing drawn
DEFAULT_MAX_EDGES = 10_000  # edge segments: each edge counts the ranks it crosses


@dataclass(frozen=True)
class DrawOptions:
    """What to draw. ``expand`` names blocks, block instances or composite ops to open;
    ``collapse`` names blocks drawn closed that are otherwise open (repeated blocks, blocks
    holding blocks), unless ``expand`` or ``depth`` opens them (the HTML view's first figure);
    ``copies`` names repeats drawn with all their copies, each in order (the view's opened
    "N×" frame), instead of copy 0 standing for all."""

    expand: tuple[str, ...] = ()
    collapse: tuple[str, ...] = ()
    copies: tuple[str, ...] = ()  # repeats (instance names: "layers") drawn with every copy
    depth: int | None = None
    shapes: bool = False
    param_counts: bool = False
    direction: Direction = "auto"
    dropout: bool = False
    max_boxes: int = DEFAULT_MAX_BOXES
    max_edges: int = DEFAULT_MAX_EDGES


@dataclass
class Box:
    """One box. ``style`` is the drawing declaration of the op it stands for (of the
    recurrent op inside, for a collapsed recurrent block), read by the paper rewrites."""

    id: str
    label: str
    family: str
    kind: str = "op"  # op | block | input | output | wave | circle | part
    style: Style | None = None
    caption: str | None = None
    note: str | None = None
    frame: str | None = None
    xlabel: str | None = None
    params: int = 0


@dataclass
class Frame:
    id: str
    kind: str  # repeat | block | group | figure | stack | stack_inner
    label: str | None
    parent: str | None
    count: int | None = None  # a repeat frame's number of copies


@dataclass
class Edge:
    src: str
    dst: str
    label: str | None = None
    kind: str = "data"  # data | residual | cross | loop | link (on to a point: no arrowhead)
    side: bool = False  # leaves and enters its boxes from the side (a residual around a frame)


@dataclass
class Drawing:
    name: str
    direction: Literal["BT", "LR"]
    boxes: dict[str, Box] = field(default_factory=dict)
    frames: dict[str, Frame] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    same_rank: list[tuple[str, ...]] = field(default_factory=list)
    rows: list[tuple[str, ...]] = field(default_factory=list)  # a wrapped strip, top down
    # stage columns: their feet's rank, left to right (first entry, then gutter foot, joint)
    columns: list[str] = field(default_factory=list)
