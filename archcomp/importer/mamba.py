"""transformers' ``MambaMixer`` (its torch path: no CUDA kernels) recognised as a whole, as the
body of the shipped spec's ``mamba_mixer`` block (archcomp/specs/blocks/mamba.yaml).

Its forward reads its children's weights as tensors (``self.conv1d.weight``, ``self.dt_proj.weight
@ dt``) and writes the scan out in aten calls, one step per position; none of that is an op
node. Recognised by its call pattern: ``in_proj``, the transpose to channels first and
``chunk(2, dim=1)`` into x and the gate, the depthwise ``conv1d`` on ``conv1d``'s weight padded by
``K - 1`` and cut back to T, the activation, ``x_proj``, ``torch.split`` into dt, B and C
(``[time_step_rank, state_size, state_size]``), ``dt_proj.weight @ dt``, the scan (softplus of
delta plus ``dt_proj.bias``, ``A = -exp(A_log)``, the ``D`` skip, ``silu(gate)``, one ``stack``
of the steps) and ``out_proj``. The body it gives keeps the module's names (``in_proj``,
``conv1d``, ``x_proj``, ``dt_proj``, ``out_proj``; ``A_log`` and ``D`` as ``parameter`` nodes
``key: self`` fed to the ``selective_scan``), so transformers' ``state_dict`` loads strictly.
A mixer whose calls differ is not recognised: the walker then lists each call it cannot express.
"""

from __future__ import annotations

import operator
from typing import Any

from torch import fx, nn

from archcomp.importer.exported import Flat

Body = dict[str, Any]
_KIDS = ("in_proj", "conv1d", "x_proj", "dt_proj", "out_proj")
_ACTS = {"aten.silu.default": "silu", "aten.gelu.default": "gelu", "aten.relu.default": "relu"}
_ACTS |= {"aten.tanh.default": "tanh", "aten.sigmoid.default": "sigmoid"}
# the mixer's own calls: the plumbing around its children, the conv and the written-out scan
_OWN = {
    "aten.transpose.int",
    "aten.chunk.default",
    "aten.squeeze.dim",
    "aten.unsqueeze.default",
    "aten.conv1d.default",
    "aten.slice.Tensor",
    "aten.split_with_sizes.default",
    "aten.matmul.default",
    "aten.exp.default",
    "aten.neg.default",
    "aten.add.Tensor",
    "aten.mul.Tensor",
    "aten.softplus.default",
    "aten.select.int",
    "aten.stack.default",
    str(operator.getitem),
    *_ACTS,
}
_ONCE = (
    "aten.conv1d.default",
    "aten.chunk.default",
    "aten.split_with_sizes.default",
    "aten.softplus.default",
    "aten.stack.default",
)


def mamba_mixer(flat: Flat, path: str, m: nn.Module, given: list[fx.Node]) -> Body | None:
    """The ``mamba_mixer`` body of the module at ``path`` called on ``given``, or None where
    it is no MambaMixer computing what that body does."""
    if not _shaped(m) or len(given) != 1:
        return None
    calls = [n for n in flat.order if path in flat.scope.get(n, ()) and n not in flat.context]
    own = [n for n in calls if flat.scope[n][-1] == path]
    found = _pattern(flat, path, m, calls, own, given[0])
    return None if found is None else _body(m, found)


def _shaped(m: nn.Module) -> bool:
    """Children and parameters of a MambaMixer: four nn.Linear, a depthwise causal Conv1d,
    its own ``A_log`` (I, N) and ``D`` (I)."""
    kids = dict(m.named_children())
    own = dict(m.named_parameters(recurse=False))
    conv = kids.get("conv1d")
    lin = [kids.get(k) for k in ("in_proj", "x_proj", "dt_proj", "out_proj")]
    if not all(isinstance(x, nn.Linear) for x in lin) or not isinstance(conv, nn.Conv1d):
        return False
    a_log, d = own.get("A_log"), own.get("D")
    if set(own) != {"A_log", "D"} or a_log is None or d is None or a_log.dim() != 2:
        return False
    inner, k = conv.out_channels, conv.kernel_size[0]
    return (
        conv.in_channels == inner == conv.groups == a_log.shape[0] == d.shape[0]
        and tuple(conv.padding) == (k - 1,)  # type: ignore[arg-type]
        and conv.stride == (1,)
        and conv.dilation == (1,)
        and conv.padding_mode == "zeros"
    )


def _pattern(
    flat: Flat, path: str, m: nn.Module, calls: list[fx.Node], own: list[fx.Node], x: fx.Node
) -> dict[str, Any] | None:
    """The activation and the split sizes where the calls are the mixer's pattern; else None."""
    targets = [str(n.target) for n in own]
    if set(targets) - _OWN or any(targets.count(t) != 1 for t in _ONCE):
        return None
    kid = {k: [n for n in calls if flat.scope[n][-1] == f"{path}.{k}"] for k in _KIDS}
    if any(len(kid[k]) != 1 for k in ("in_proj", "x_proj", "out_proj")) or kid["conv1d"]:
        return None
    if kid["dt_proj"] or not _reads_only_its_own(flat, path, m, own):
        return None
    one = {t: next(n for n in own if str(n.target) == t) for t in _ONCE}
    chunk, conv, split = one["aten.chunk.default"], one["aten.conv1d.default"], None
    in_proj, x_proj, out_proj = kid["in_proj"][0], kid["x_proj"][0], kid["out_proj"][0]
    if _data(flat, in_proj) != [x] or list(chunk.args[1:]) != [2, 1]:
        return None
    if _data(flat, chunk) != [_transposed(flat, in_proj)]:
        return None
    pieces = {u.args[1]: u for u in chunk.users if u.target is operator.getitem}
    if set(pieces) != {0, 1} or flat.get(conv.args[0]) is not pieces[0]:
        return None
    act = _after_cut(flat, conv, x)
    if act is None or _data(flat, x_proj) != [_transposed(flat, act)]:
        return None
    split = one["aten.split_with_sizes.default"]
    if flat.get(split.args[0]) is not x_proj or split.args[2:] not in ([-1], [2], (-1,), (2,)):
        return None
    sizes: list[int] = [int(s) for s in split.args[1]]  # type: ignore[union-attr,arg-type]
    n = int(m.get_parameter("A_log").shape[1])
    if len(sizes) != 3 or sizes[1:] != [n, n]:
        return None
    if not _gated_output(flat, out_proj, pieces[1]):
        return None
    return {"act": _ACTS[str(act.target)], "sizes": sizes}


def _reads_only_its_own(flat: Flat, path: str, m: nn.Module, own: list[fx.Node]) -> bool:
    """Whether the own calls read exactly the weights the torch path reads: A_log, D, the
    conv's weight (and bias) and dt_proj's weight and bias."""
    want = {"A_log", "D", "conv1d.weight", "dt_proj.weight", "dt_proj.bias"}
    if m.get_submodule("conv1d").bias is not None:
        want.add("conv1d.bias")
    read = {flat.weights[a] for n in own for a in flat.args_of(n) if a in flat.weights}
    return read == {f"{path}.{k}" for k in want}


def _data(flat: Flat, n: fx.Node) -> list[fx.Node]:
    """What ``n`` reads that is no weight."""
    return [a for a in flat.args_of(n) if a not in flat.weights]


def _transposed(flat: Flat, n: fx.Node) -> fx.Node | None:
    """The one user of ``n`` that swaps dims 1 and 2."""
    for u in flat.users.get(n, []):
        dims: Any = u.args[1:]
        if str(u.target) == "aten.transpose.int" and sorted(dims) in ([1, 2], [-1, 1]):
            return u
    return None


def _after_cut(flat: Flat, conv: fx.Node, x: fx.Node) -> fx.Node | None:
    """The activation of the conv's output cut back to T positions (``[:, :, :T]``; with a
    kernel of one, a full slice, which the reading drops)."""
    length = int(x.meta["val"].shape[1])
    cuts = [conv] if int(conv.meta["val"].shape[2]) == length else []
    for cut in flat.users.get(conv, []):
        if str(cut.target) == "aten.slice.Tensor" and list(cut.args[1:]) == [2, 0, length]:
            cuts.append(cut)
    for cut in cuts:
        acts = [u for u in flat.users.get(cut, []) if str(u.target) in _ACTS]
        if len(acts) == 1 and len(flat.users.get(cut, [])) == 1:
            return acts[0]
    return None


def _gated_output(flat: Flat, out_proj: fx.Node, gate: fx.Node) -> bool:
    """Whether ``out_proj`` reads, transposed, the scan's output times ``silu(gate)``."""
    ts = _data(flat, out_proj)
    t = ts[0] if len(ts) == 1 else None
    if t is None or str(t.target) != "aten.transpose.int":
        return False
    y = flat.get(t.args[0])
    if str(y.target) != "aten.mul.Tensor":
        return False
    silu = [a for a in flat.args_of(y) if str(a.target) == "aten.silu.default"]
    return len(silu) == 1 and flat.get(silu[0].args[0]) is gate


_FIELDS = ("hidden_size", "intermediate_size", "state_size", "conv_kernel", "time_step_rank")


def _sizes(m: nn.Module, found: dict[str, Any]) -> dict[str, Any]:
    """The mixer's sizes by its config's names, as the spec writes them: ``${state_size}`` where
    the config (``m.config``) gives every one of them as the module has it (``params``: their
    values, the block's defaults), else literals."""
    conv: Any = m.get_submodule("conv1d")
    out_proj: Any = m.get_submodule("out_proj")
    r, n, _ = found["sizes"]
    have = {
        "hidden_size": int(out_proj.out_features),
        "intermediate_size": int(conv.out_channels),
        "state_size": n,
        "conv_kernel": int(conv.kernel_size[0]),
        "time_step_rank": r,
    }
    cfg = getattr(m, "config", None)
    named = all(getattr(cfg, f, None) == have[f] for f in _FIELDS)
    exprs = {
        "2I": "2 * intermediate_size",
        "K-1": "conv_kernel - 1",
        "R+2N": "time_step_rank + 2 * state_size",
    }
    values = {
        "2I": 2 * have["intermediate_size"],
        "K-1": have["conv_kernel"] - 1,
        "R+2N": r + 2 * n,
    }
    if named:
        names = {f: f"${{{f}}}" for f in _FIELDS} | {k: f"${{{e}}}" for k, e in exprs.items()}
        return names | {"params": have}
    return have | values


def _body(m: nn.Module, found: dict[str, Any]) -> Body:
    """The shipped ``mamba_mixer`` block's nodes, sized by ``m`` (in its config's names),
    ``A_log`` and ``D`` given to the scan as parameter nodes of the mixer's own names."""
    conv: Any = m.get_submodule("conv1d")
    in_proj: Any = m.get_submodule("in_proj")
    out_proj: Any = m.get_submodule("out_proj")
    s = _sizes(m, found)
    inner, n = s["intermediate_size"], s["state_size"]
    no_bias = {} if in_proj.bias is not None else {"bias": False}
    conv_opts = {"kernel_size": s["conv_kernel"], "groups": inner, "padding": s["K-1"]}
    nodes: list[dict[str, Any]] = [
        {"id": "in_proj", "op": "linear", "out_features": s["2I"]} | no_bias,
        {"id": "channels_first", "op": "transpose", "dim0": 1, "dim1": 2},  # (B, 2I, T)
        {"id": "xz", "op": "split", "chunks": 2, "dim": 1},  # x, gate: (B, I, T)
        {"id": "conv1d", "op": "conv1d", "in": "xz.out0", "out_channels": inner}
        | conv_opts
        | ({} if conv.bias is not None else {"bias": False}),
    ]
    if int(conv.kernel_size[0]) > 1:  # (B, I, T + K - 1) -> (B, I, T)
        nodes.append({"id": "causal", "op": "index", "at": f"[:, :, :-{s['K-1']}]"})
    nodes += [
        {"id": "act", "op": found["act"]},
        {"id": "channels_last", "op": "transpose", "dim0": 1, "dim1": 2},  # (B, T, I)
        {"id": "x_proj", "op": "linear", "out_features": s["R+2N"], "bias": False},
        {"id": "dt_bc", "op": "split", "sizes": [s["time_step_rank"], n, n]},
        {"id": "dt_proj", "op": "linear", "in": "dt_bc.out0", "out_features": inner},
        {"id": "delta", "op": "transpose", "dim0": 1, "dim1": 2},  # (B, I, T)
        {"id": "B", "op": "transpose", "in": "dt_bc.out1", "dim0": 1, "dim1": 2},  # (B, N, T)
        {"id": "C", "op": "transpose", "in": "dt_bc.out2", "dim0": 1, "dim1": 2},
        {"id": "A_log", "op": "parameter", "shape": [inner, n], "key": "self"},
        {"id": "D", "op": "parameter", "shape": [inner], "key": "self"},
        {
            "id": "ssm",
            "op": "selective_scan",
            "in": {"x": "act", "delta": "delta", "B": "B", "C": "C", "z": "xz.out1"}
            | {"A_log": "A_log", "D": "D"},
            "delta_softplus": True,
        },  # (B, I, T)
        {"id": "out_t", "op": "transpose", "dim0": 1, "dim1": 2},  # (B, T, I)
        {"id": "out_proj", "op": "linear", "out_features": s["hidden_size"]}
        | ({} if out_proj.bias is not None else {"bias": False}),
    ]
    body: Body = {"inputs": ["x"], "nodes": nodes, "outputs": "out_proj"}
    return body | ({"params": s["params"]} if "params" in s else {})  # each size's default
