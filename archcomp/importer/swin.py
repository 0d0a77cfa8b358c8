"""Swin's window attention (transformers 5's ``SwinAttention``) as one ``multi_head_attention``.

Its forward projects q, k and v (``q_proj``, ``k_proj``, ``v_proj``), splits heads, reads its
``SwinRelativePositionBias`` child (the table at each pair's offset: ``index``, ``view``,
``permute``, ``unsqueeze``), adds the layer's shifted-window mask where one is given, calls
``F.scaled_dot_product_attention`` once with that sum as its additive mask, merges heads and
projects with ``o_proj``: ``multi_head_attention`` with ``relative_position_bias: ws`` (the
table inside the op, so its keys are the module's). The mask, computed from no input in the
layer (context), is checked value for value against archcomp's ``swin_shift_mask`` of the map
the windows were cut from, and becomes that node (``shift: 0``, all zeros, where the layer
gives none, so shifted and unshifted copies of a stage are one block). Also here: the patch
merging's strided slices and cat folded into the shipped spec's reshape, permute, reshape
(:func:`fold_patch_merging`), and reshapes that keep the traced batch size first written with
``-1`` there (:func:`batch_free`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import fx, nn

from archcomp.importer.exported import Flat
from archcomp.importer.recognise_encdec import evaluate

_SDPA = "aten.scaled_dot_product_attention.default"
_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")
_OWN = {
    "aten.view.default",
    "aten.reshape.default",
    "aten.transpose.int",
    "aten.add.Tensor",
    _SDPA,
}
_BIAS = {"aten.index.Tensor", "aten.view.default", "aten.permute.default"}
_BIAS |= {"aten.unsqueeze.default"}
_PLUMBING = {"aten.view.default", "aten.reshape.default", "aten.transpose.int"}
Op = tuple[str, dict[str, Any]]


def window_attention(flat: Flat, path: str, m: nn.Module, group: list[fx.Node]) -> Op | str | None:
    """``multi_head_attention`` with ``relative_position_bias`` of a Swin attention module;
    None for a module without a ``relative_position_bias`` child holding a table."""
    bias = getattr(m, "relative_position_bias", None)
    table = getattr(bias, "relative_position_bias_table", None)
    if not isinstance(bias, nn.Module) or not isinstance(table, nn.Parameter):
        return None
    kids = set(dict(m.named_children()))
    if kids != {*_PROJ, "relative_position_bias"}:
        return f"a window attention with children {', '.join(sorted(kids))}"
    level = [n for n in group if flat.scope[n][-1] == path]
    inner = [n for n in group if f"{path}.relative_position_bias" in flat.scope[n]]
    extra = sorted({str(n.target) for n in level} - _OWN | {str(n.target) for n in inner} - _BIAS)
    if extra:
        return f"a window attention that also computes {', '.join(extra)}"
    window = _window(bias, table)
    if isinstance(window, str):
        return window
    sdpa = [n for n in level if str(n.target) == _SDPA]
    if len(sdpa) != 1 or not inner:
        return "a window attention without exactly one F.scaled_dot_product_attention"
    opts = _heads(m)
    if isinstance(opts, str):
        return opts
    d: int = m.head_dim  # type: ignore[assignment]  # an int: checked by _heads
    mask = _mask_of(flat, sdpa[0], inner[-1])
    if isinstance(mask, str):
        return mask
    call = sdpa[0]
    if call.kwargs.get("is_causal") or call.kwargs.get("dropout_p"):
        return "a window attention that is causal or drops scores while traced"
    scale = call.kwargs.get("scale")
    if isinstance(scale, float) and not math.isclose(scale, d**-0.5, rel_tol=1e-9):
        opts["scale"] = scale
    drop = float(getattr(m, "attention_dropout", 0.0) or 0.0)
    if drop:
        opts["dropout"] = drop
    opts |= {"out_name": "o_proj", "relative_position_bias": window}
    query = _query(flat, path, level, group)
    if query is None:
        return "a window attention whose q, k and v are not of one input"
    made = _shift_mask(flat, query, window, mask)
    if isinstance(made, str):
        return made
    grid, shift, token = made
    opts["_ports"] = {"query": query, "mask": token}
    before = {"window_size": window, "shift": shift}
    opts["_before"] = [("shift_mask", "swin_shift_mask", grid, before, token)]
    return "multi_head_attention", opts


def _heads(m: nn.Module) -> dict[str, Any] | str:
    h, d = getattr(m, "num_attention_heads", None), getattr(m, "head_dim", None)
    projections = [m.get_submodule(p) for p in _PROJ]
    if not isinstance(h, int) or not isinstance(d, int):
        return "a window attention without num_attention_heads and head_dim"
    if not all(isinstance(p, nn.Linear) for p in projections):
        return "a window attention whose projections are not nn.Linear"
    if any(p.out_features != h * d for p in projections[:3]):  # type: ignore[union-attr]
        return "a window attention whose projections are not num_heads * head_dim wide"
    biases = [p.bias is not None for p in projections]  # type: ignore[union-attr]
    opts: dict[str, Any] = {"num_heads": h}
    if projections[0].in_features != h * d:  # type: ignore[union-attr]
        opts["head_dim"] = d
    keys = ("q", "k", "v", "out")
    opts["bias"] = biases[0] if len(set(biases)) == 1 else dict(zip(keys, biases, strict=True))
    return opts


class Token:
    """A value the spec computes that no call of the graph gives (the zero shift mask)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _window(bias: nn.Module, table: torch.Tensor) -> int | str:
    size = getattr(bias, "window_size", None)
    size = (size, size) if isinstance(size, int) else tuple(size or ())
    rows = (2 * size[0] - 1) * (2 * size[-1] - 1) if len(size) == 2 else -1
    if len(size) != 2 or size[0] != size[1] or table.shape[0] != rows:
        return f"a relative position bias of window {size} and table {tuple(table.shape)}"
    return int(size[0])


def _mask_of(flat: Flat, sdpa: fx.Node, bias: fx.Node) -> fx.Node | str | None:
    """The context mask added to the bias (None where SDPA reads the bias alone)."""
    m = sdpa.args[3] if len(sdpa.args) > 3 else sdpa.kwargs.get("attn_mask")
    m = flat.get(m)
    if m is bias:
        return None
    if isinstance(m, fx.Node) and str(m.target) == "aten.add.Tensor":
        a, b = (flat.get(x) for x in m.args[:2])
        other = b if a is bias else a if b is bias else None
        if other is not None and other in flat.context:
            return other
    return "a window attention whose scores take another mask than its bias and a shift mask"


def _query(flat: Flat, path: str, level: list[fx.Node], group: list[fx.Node]) -> fx.Node | None:
    """The one value the three projections read (the windows)."""
    ins = {
        flat.get(n.args[0])
        for n in group
        if str(n.target) == "aten.linear.default"
        and flat.scope[n][-1] in {f"{path}.{p}" for p in _PROJ[:3]}
    }
    return ins.pop() if len(ins) == 1 else None


def _grid(flat: Flat, windows: fx.Node) -> fx.Node | None:
    """The (B, H, W, C) map the windows were cut from: back through the partition's views and
    transposes to the input of its 6-d view."""
    n: Any = windows
    for _ in range(8):
        if not isinstance(n, fx.Node) or str(n.target) not in _PLUMBING:
            return None
        x = flat.get(n.args[0])
        if str(n.target) == "aten.view.default" and len(n.meta["val"].shape) == 6:
            return x if len(x.meta["val"].shape) == 4 else None
        n = x
    return None


def _shift_mask(
    flat: Flat, windows: fx.Node, window: int, mask: fx.Node | None
) -> tuple[fx.Node, int, fx.Node] | str:
    """(map, shift, the value the mask node gives): the layer's mask, value for value, as
    ``swin_shift_mask`` of the map for one shift (0 without a mask)."""
    from archcomp.nn.positional import SwinShiftMask

    grid = _grid(flat, windows)
    if grid is None:
        return "a window attention on windows not cut from a (B, H, W, C) map by its views"
    b, h, w, _ = (int(s) for s in grid.meta["val"].shape)
    if mask is None:  # a zero mask: a value of no call of the graph, named by its node
        return grid, 0, Token(f"{windows.name}_shift_mask")  # type: ignore[return-value]
    got = evaluate(flat, mask)
    for shift in range(1, window):
        if h % window or w % window or not isinstance(got, torch.Tensor):
            break
        want = SwinShiftMask(h, w, window, shift)(torch.zeros(b, h, w, 1))
        if want.shape == got.shape and torch.equal(want, got.to(want.dtype)):
            return grid, shift, mask
    return "a window attention whose mask is no swin_shift_mask of its map"


def batch_free(flat: Flat, n: fx.Node, opts: dict[str, Any], dims: Any) -> dict[str, Any]:
    """A reshape that keeps the traced batch size first (Swin's ``x.view(B, H, W, C)``,
    ``x.view(B, -1, 4 C)``) with ``-1`` there and its other sizes literal, so the spec runs at
    any batch size (``dims``: the leading symbols' (size, name), the batch first). Left as it
    is where a ``-1`` it has stands for a size another symbol's example has (``T``)."""
    shape, x, out = opts.get("shape"), flat.get(n.args[0]).meta.get("val"), n.meta.get("val")
    batch = dims[0][0] if dims else None
    if batch is None or not shape or shape[0] != batch or x is None or out is None:
        return opts
    if int(x.shape[0]) != batch or int(out.shape[0]) != batch:
        return opts
    sizes = [int(s) for s in out.shape[1:]]
    symbols = {size for size, _ in dims[1:]}
    if any(v == -1 and size in symbols for v, size in zip(shape[1:], sizes, strict=False)):
        return opts
    return opts | {"shape": [-1, *sizes]}


_QUARTERS = [(0, 0), (1, 0), (0, 1), (1, 1)]  # (row, column) of each piece, as Swin cats them


def fold_patch_merging(items: list[Any], flat: Flat) -> list[Any]:
    """Swin's patch merging, ``cat([x[:, r::2, c::2, :] for c in (0, 1) for r in (0, 1)],
    -1)`` of a (B, H, W, C) map (eight strided slices, then a cat), as the shipped spec's
    ``patch_merging`` writes it: ``reshape`` to (B, H/2, 2, W/2, 2, C), ``permute`` to (B,
    H/2, W/2, column, row, C), ``reshape`` to (B, H/2, W/2, 4 C)."""
    out: list[Any] = []
    drop: set[fx.Node] = set()
    for it in items:
        grid = _quarters(flat, it) if it.op == "concat" else None
        if grid is None:
            out.append(it)
            continue
        x, pieces = grid
        drop |= pieces
        _, h, w, c = (int(s) for s in x.meta["val"].shape)
        groups, by = Token(f"{it.id}_groups"), Token(f"{it.id}_by_group")
        shape = [-1, h // 2, 2, w // 2, 2, c]  # (B, H', row, W', column, C)
        out += [
            dataclasses.replace(
                it, id="groups", op="reshape", ins=[x], opts={"shape": shape}, outs=[groups]
            ),
            dataclasses.replace(
                it,
                id="by_group",
                op="permute",
                ins=[groups],
                opts={"dims": [0, 1, 3, 4, 2, 5]},
                outs=[by],
            ),
            dataclasses.replace(
                it, id="merged", op="reshape", ins=[by], opts={"shape": [-1, h // 2, w // 2, 4 * c]}
            ),
        ]
    return [it for it in out if not (it.op == "index" and set(it.outs) <= drop)]


def _quarters(flat: Flat, cat: Any) -> tuple[fx.Node, set[fx.Node]] | None:
    """The map and the slices of a cat of its four strided quarters in Swin's order."""
    ins = cat.ins if isinstance(cat.ins, list) else []
    if len(ins) != 4 or cat.opts.get("dim", -1) not in (-1, 3):
        return None
    x: Any = None
    used: set[fx.Node] = set()
    for piece, (row, col) in zip(ins, _QUARTERS, strict=True):
        inner = flat.get(piece.args[0]) if _strided(piece, 2, col) else None
        if inner is None or not _strided(inner, 1, row):
            return None
        base = flat.get(inner.args[0])
        if x not in (None, base) or len(flat.users.get(inner, [])) != 1:
            return None
        x, used = base, used | {piece, inner}
    shape: Any = getattr(getattr(x, "meta", {}).get("val"), "shape", ())
    if len(shape) != 4 or int(shape[1]) % 2 or int(shape[2]) % 2:
        return None
    return x, used


def _strided(n: Any, dim: int, start: int) -> bool:
    """``x[:, start::2]`` on ``dim`` (aten.slice to the end with step 2)."""
    if not isinstance(n, fx.Node) or str(n.target) != "aten.slice.Tensor":
        return False
    d, s, e, step = [*n.args[1:], None, None, None, None][:4]
    end = e is None or (isinstance(e, int) and e >= 1 << 62)
    return bool(d == dim and (s or 0) == start and end and step == 2)
