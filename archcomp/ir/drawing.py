"""How an op is drawn: its :class:`Style`, and the built-in inside (:class:`Figure`) of a
composite op. Declared on the op (``OpDef.style``); the Graphviz backend reads these fields
and names no op itself. docs/diagrams.md, "How an op is drawn", shows them at work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Part:
    """One box of a figure. ``op`` names a composite op drawn here, expandable in turn."""

    id: str
    label: str
    family: str
    op: str | None = None


@dataclass(frozen=True)
class Figure:
    """A composite op's inside, drawn when ``--expand`` names the op (the paper's Figure 2):
    its parts, the edges between them (``part`` or ``part:port`` of a nested figure), which
    op input port enters which part, the part giving the result, and an optional stacked
    frame ("h×") whose count is an op argument."""

    parts: tuple[Part, ...]
    edges: tuple[tuple[str, str], ...]  # part -> part
    ports: tuple[tuple[str, str], ...]  # (op input port, part it enters); a port may repeat
    result: str  # the part whose output is the op's result
    stack: tuple[str, ...] = ()  # parts drawn inside a stacked frame
    stack_count: str | None = None  # op argument holding the count (num_heads)
    stack_symbol: str = "h"
    stack_label: str | None = None  # the stacked frame's words, instead of "h× (h = 8)"
    # A second stacked frame beside the first: grouped-query attention's key/value heads.
    side_stack: tuple[str, ...] = ()
    side_stack_label: str | None = None
    same_rank: tuple[tuple[str, ...], ...] = ()  # parts drawn side by side


@dataclass(frozen=True)
class Style:
    """How the op is drawn.

    - ``family``: its colour, ``PALETTE[family]`` (:mod:`archcomp.ops.registry`; a family not
      there draws grey). The family also colours every collapsed block the op is in: the
      block takes the first rule of ``BLOCK_FAMILY_RULES`` (graphviz/style.py) that the
      families of its ops satisfy, so changing an op's family can recolour blocks. Ops of
      the ``dropout`` family are not drawn unless asked (``--dropout``); ``posenc`` ops are
      drawn joined to their input by a circled plus; ``conv``/``pool`` graphs without
      ``attention``/``recurrent`` flow left to right.
    - ``label``: the paper's words on its box; ``shape``: ``box``, or ``circle`` for a
      symbol (``+``, ``×``).
    - ``label_for``: words that depend on the node's arguments ("Masked Multi-Head
      Attention" when causal); ``None`` from it, or no function, means ``label``.
    - ``residual_add``: the op sums a residual branch into the main path (``add``).
    - ``fuses_add``: a norm drawn together with the ``residual_add`` before it as one
      "Add & Norm" box (``layer_norm``, ``rms_norm``): when the add's only consumer is this
      op, fed by nothing else, in the same frame; and a collapsed block holding only such
      adds and norms (dropout aside, at least one of each) is one "Add & Norm" box.
    - ``state``: a recurrent op's state, drawn as a loop on its box labelled with it
      (``h``; ``h, c`` for LSTM); ``None``: no loop.
    - ``output_label``: the words for a graph output it produces ("Output Probabilities"
      for softmax), unless the node has a ``label:``.
    - ``glyph``: drawn as this symbol in a circle with the label beside it, a word per line
      (the paper's ``∿`` for sinusoidal positional encoding).
    - ``figure``: its inside, drawn when ``--expand`` names the op.
    - ``figure_for``: the inside for a node's arguments and the input ports it has connected
      (Llama's attention: RoPE, q-k norm, a causal mask); ``None`` from it, or no function,
      means ``figure``.
    - ``plumbing``: the op only moves a tensor's dims (reshape, permute, flatten, expand),
      rolls it (Swin's cyclic shift) or prepends learned tokens to it (ViT's [CLS] concat):
      not drawn unless ``--depth all``,
      its edges passing through to the box it serves (a concat only when all its inputs but
      one come from parameters).
    - ``plumbing_for``: whether the op is plumbing for a node's arguments (an ``index`` that
      only slices, a crop such as Mamba's causal conv's, is; one that picks a position, as
      ViT's [CLS], is not); ``None``: ``plumbing`` decides.
    - ``absorbed``: the op computes, from its arguments (and its inputs' sizes), a tensor for
      the box it feeds (Swin's shift mask and window relative position bias, which the
      attention's caption names): no box of its own and no edges, its parameters counted in
      that box's; drawn with ``--depth all``. A block of only ``plumbing`` ops (Swin's window
      partition and reverse) is folded like its ops, unless ``--expand`` names it.
    - ``head_pick_for``: whether a node of the op with these arguments picks a sequence's
      first token, its [CLS] (``x[:, 0]``): folded unless ``--depth all`` where its one reader
      is a linear head giving a graph output, so the head reads token 0 as ViT's MLP Head
      does (a last time step's pick, an RNN's, stays drawn); ``None``: never.
    - ``figure_open``: the figure is drawn without ``--expand`` (a mixture of experts is its
      router and experts, as the papers draw it); ``--depth`` still decides when given.
    - ``caption_for``: a detail line under the box from the node's arguments and connected
      input ports ("h = 32 query, 8 key/value heads · RoPE"; "relative bias" for T5).
    """

    family: str
    label: str
    shape: str = "box"
    label_for: Callable[[Any], str | None] | None = None
    residual_add: bool = False
    fuses_add: bool = False
    state: str | None = None
    output_label: str | None = None
    glyph: str | None = None
    figure: Figure | None = None
    figure_for: Callable[[Any, frozenset[str]], Figure | None] | None = None
    caption_for: Callable[[Any, frozenset[str]], str | None] | None = None
    figure_open: bool = False
    plumbing: bool = False
    absorbed: bool = False
    plumbing_for: Callable[[Any], bool] | None = None
    head_pick_for: Callable[[Any], bool] | None = None

    def figure_of(self, args: Any, ports: frozenset[str]) -> Figure | None:
        """The inside drawn for a node with ``args`` and these connected input ports."""
        if self.figure_for is not None:
            return self.figure_for(args, ports) or self.figure
        return self.figure

    def is_plumbing(self, args: Any) -> bool:
        """Whether a node of this op with ``args`` is shape plumbing (folded unless
        ``--depth all``)."""
        return self.plumbing_for(args) if self.plumbing_for is not None else self.plumbing

    def words(self, args: Any) -> str:
        """The words on a box of this op with ``args``."""
        return (self.label_for(args) if self.label_for else None) or self.label


@dataclass(frozen=True)
class OutputFigure:
    """What a figure draws after a graph output the spec declares in ``figure: {outputs:
    ...}``: these boxes, in order, then the output under ``label`` (the model computes none
    of it)."""

    parts: tuple[Part, ...]
    label: str


# The spec's ``figure: {outputs: {NAME: KEY}}`` keys (docs/spec-format.md, "figure").
OUTPUT_FIGURES: dict[str, OutputFigure] = {
    # The Transformer's Figure 1: Linear -> Softmax -> Output Probabilities.
    "probabilities": OutputFigure((Part("softmax", "Softmax", "softmax"),), "Output Probabilities"),
}
