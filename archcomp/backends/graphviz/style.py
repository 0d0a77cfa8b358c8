"""What a box says and which colour it gets: the paper's words, as tables read top to bottom.

What an op looks like is declared on the op (``Style``, :mod:`archcomp.ir.drawing`: colour
family, words, words from its arguments, Add & Norm fusing, state loop, figure); this module
adds the colour of a collapsed block (from the families of the ops inside it) and the words for
graph inputs and outputs. It names no op.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from archcomp.ir import Node
from archcomp.ir.dims import Dim, Shape
from archcomp.ir.drawing import Style
from archcomp.ops.registry import PALETTE

# Ops drawn as pass-through (not drawn at all) unless DrawOptions.dropout is set: the paper's
# figures leave dropout out.
ELIDED_FAMILIES = frozenset({"dropout"})

# Colour of a block without a palette family of its own.
BLOCK_COLOUR = "#eeeeee"
FRAME_FILL = "#f3f3f3"
FRAME_LINE = "#8c8c8c"
LINE = "#333333"


def colour(family: str) -> str:
    return PALETTE.get(family, BLOCK_COLOUR)


# The circled plus joining a positional encoding to its input: a residual add, as the paper
# draws it (a norm right after it fuses into "Add & Norm").
PLUS = Style("arith", "+", "circle", residual_add=True)


def op_label(n: Node) -> str:
    """The words on a node's box: the user's ``label:``, else the paper's words for the op."""
    return n.label or n.op.style.words(n.args)


def humanize(name: str) -> str:
    """``feed_forward`` -> ``Feed Forward``."""
    return " ".join(w[:1].upper() + w[1:] for w in name.split("_") if w)


# A collapsed block's colour family from the op families inside it; first match wins.
# Each rule: (family, required families (all), allowed families (None: any)).
BLOCK_FAMILY_RULES: tuple[tuple[str, frozenset[str], frozenset[str] | None], ...] = (
    ("attention", frozenset({"attention"}), None),
    ("recurrent", frozenset({"recurrent"}), None),
    ("addnorm", frozenset({"arith", "norm"}), frozenset({"arith", "norm", "dropout"})),
    ("embedding", frozenset({"embedding"}), None),
    ("conv", frozenset({"conv"}), None),
    ("feedforward", frozenset({"linear", "activation"}), None),
    ("feedforward", frozenset({"feedforward"}), None),  # a mixture of experts
    ("linear", frozenset({"linear"}), frozenset({"linear", "dropout", "shape"})),
    ("pool", frozenset({"pool"}), None),
    ("norm", frozenset({"norm"}), frozenset({"norm", "dropout"})),
    ("softmax", frozenset({"softmax"}), None),
)


def block_family(families: Iterable[str]) -> str:
    fams = set(families)
    for family, need, allowed in BLOCK_FAMILY_RULES:
        if need <= fams and (allowed is None or fams <= allowed):
            return family
    return "block"


def is_add_norm(styles: Iterable[Style]) -> bool:
    """A block of residual adds and norms that fuse with them, at least one of each (ops not
    drawn aside: dropout), is the paper's "Add & Norm"."""
    drawn = [s for s in styles if s.family not in ELIDED_FAMILIES]
    return (
        any(s.residual_add for s in drawn)
        and any(s.fuses_add for s in drawn)
        and all(s.residual_add or s.fuses_add for s in drawn)
    )


# Graph inputs: the papers' words for the conventional names of a model's inputs.
INPUT_WORDS: dict[str, str] = {
    "src": "Inputs",
    "source": "Inputs",
    "inputs": "Inputs",
    "input_ids": "Inputs",
    "tokens": "Inputs",
    "ids": "Inputs",
    "images": "Images",  # the vision papers' word (Swin's Figure 3, ViT's, ResNet's "image")
    "pixel_values": "Images",
    "tgt": "Outputs (shifted right)",
    "target": "Outputs (shifted right)",
    "tgt_in": "Outputs (shifted right)",
    "shifted_outputs": "Outputs (shifted right)",
    "decoder_input_ids": "Outputs (shifted right)",
    "input_features": "Log-Mel Spectrogram",  # Whisper's Figure 1
}


def output_label(name: str, producer: Node | None) -> str:
    """A graph output's words: its producer's ``Style.output_label`` ("Output Probabilities"
    after a softmax), else the output's name."""
    if producer is not None and producer.op.style.output_label and not producer.label:
        return producer.op.style.output_label
    return name


def feature_maps(shape: Shape) -> str | None:
    """LeNet's caption for a batch-first tensor: ``6@28×28`` for [B, 6, 28, 28]; ``84``
    for [B, 84]."""
    if len(shape) >= 3:
        c, *rest = shape[1:]
        return f"{_d(c)}@" + "×".join(_d(d) for d in rest)
    if len(shape) == 2:
        return _d(shape[1])
    return None


def _d(d: Dim) -> str:
    s = str(d)
    return s if isinstance(d, int) or s.isidentifier() else f"({s})"


def fmt_count(n: int) -> str:
    """Parameter counts the way papers print them: 67, 12.3K, 2.36M, 175B."""
    if n < 1000:
        return str(n)
    for div, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= div:
            v = n / div
            text = f"{v:.3g}"
            return text + unit
    return str(n)  # pragma: no cover


def _spatial_rank(op: str) -> int | None:
    """1, 2 or 3 for ops named ``..1d``/``..2d``/``..3d`` (conv1d, max_pool2d); else None."""
    return int(op[-2]) if len(op) > 2 and op[-1] == "d" and op[-2] in "123" else None


def arg_detail(n: Node) -> str | None:
    """A short detail line from common args: kernel size, layers."""
    a: Any = n.args
    ks = getattr(a, "kernel_size", None)
    if ks is not None:
        ks = tuple(ks) if isinstance(ks, (list, tuple)) else (ks,)
        rank = _spatial_rank(n.op.name)
        if len(ks) == 1 and rank == 1:
            return f"kernel {ks[0]}"  # a 1-D kernel: "3×3" would say 2-D
        if len(ks) == 1 and (rank or n.op.style.family in ("conv", "pool")):
            ks = ks * (rank or 2)
        return "×".join(str(k) for k in ks)
    layers = getattr(a, "num_layers", None)
    if isinstance(layers, int) and layers > 1:
        return f"{layers} layers"
    return None
