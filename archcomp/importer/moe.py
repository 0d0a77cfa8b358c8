"""A transformers sparse mixture-of-experts block (Mixtral's ``MixtralSparseMoeBlock``: a
router ``gate`` and the stacked ``experts``; DeepSeek-V3's ``DeepseekV3MoE``, with its grouped,
bias-corrected sigmoid router and ``shared_experts``) recognised as archcomp's
``mixture_of_experts``: the router's linear, softmax (or sigmoid) scores, top-k and
renormalisation read from its calls, DeepSeek's groups, score-correction bias and routed scale
from its router, the experts' sizes and activation from their stacked tensors. The op routes
sparsely (top_k of E experts per token), as the module does: never a dense approximation.
"""

from __future__ import annotations

from typing import Any

from torch import fx, nn

from archcomp.importer.exported import Flat

Op = tuple[str, dict[str, Any]]
_ROUTER_OPS = {
    "aten.linear.default",
    "aten.softmax.int",
    "aten.sigmoid.default",
    "aten.topk.default",
    "<built-in function getitem>",
    "aten.sum.dim_IntList",
    "aten.div_.Tensor",
    "aten.div.Tensor",
    "aten.reshape.default",
    "aten.view.default",
}
# DeepSeek-V3's router: + e_score_correction_bias, the groups' best-two sums, the top groups'
# mask (zeros_like, scatter_, unsqueeze, expand, to bool, ~, masked_fill), gather, * scale
_GROUPED_OPS = _ROUTER_OPS | {
    "aten.add.Tensor",
    "aten.zeros_like.default",
    "aten.scatter_.value",
    "aten.unsqueeze.default",
    "aten.expand.default",
    "aten.to.dtype",
    "aten.bitwise_not.default",
    "aten.masked_fill.Scalar",
    "aten.gather.default",
    "aten.mul.Tensor",
}
_BLOCK_OPS = {"aten.view.default", "aten.reshape.default"}
_SHARED_OPS = {"aten.linear.default", "aten.mul.Tensor", "aten.silu.default"}
_SHARED_OPS |= {"aten.gelu.default", "aten.relu.default"}
_ACTS = {"SiLUActivation": "silu", "SiLU": "silu", "GELUTanh": "gelu_tanh", "ReLU": "relu"}
_ACTS |= {"PytorchGELUTanh": "gelu_tanh", "GELUActivation": "gelu"}


def is_moe(module: nn.Module) -> bool:
    kids = dict(module.named_children())
    routed = set(kids) - {"shared_experts"} == {"gate", "experts"}
    return routed and hasattr(kids["experts"], "down_proj")


def moe_op(flat: Flat, path: str, m: nn.Module, group: list[fx.Node]) -> Op | str:
    """``mixture_of_experts`` with its options; a reason where the block computes more."""
    gate: Any = m.get_submodule("gate")
    experts: Any = m.get_submodule("experts")
    own = {str(n.target) for n in group if flat.scope[n][-1] == path}
    routed = {str(n.target) for n in group if flat.scope[n][-1] == f"{path}.gate"}
    shared: Any = getattr(m, "shared_experts", None)
    grouped = hasattr(gate, "n_group") or hasattr(gate, "num_group")
    block_ops = _BLOCK_OPS | ({"aten.add.Tensor"} if shared is not None else set())
    extra = sorted((own - block_ops) | (routed - (_GROUPED_OPS if grouped else _ROUTER_OPS)))
    if extra:
        return f"a mixture of experts that also computes {', '.join(extra)}"
    weight, top_k = getattr(gate, "weight", None), getattr(gate, "top_k", None)
    up, down = getattr(experts, "gate_up_proj", None), experts.down_proj
    if weight is None or not isinstance(top_k, int) or getattr(gate, "bias", None) is not None:
        return "a router without one weight (E, d) and top_k"
    if up is None or up.dim() != 3 or down.dim() != 3:
        return "experts without stacked gate_up_proj (E, 2F, d) and down_proj (E, d, F)"
    act = _ACTS.get(type(getattr(experts, "act_fn", None)).__name__)
    if act is None:
        return f"experts whose activation is {type(getattr(experts, 'act_fn', None)).__name__}"
    num, features = int(down.shape[0]), int(down.shape[2])
    if tuple(up.shape) != (num, 2 * features, down.shape[1]) or weight.shape[0] != num:
        return "experts whose stacked tensors disagree in E, F or d"
    opts: dict[str, Any] = {"num_experts": num, "top_k": top_k, "expert_features": features}
    if act != "silu":
        opts["activation"] = act
    if "aten.sigmoid.default" in routed:
        opts["scoring"] = "sigmoid"
    if not grouped and "aten.sum.dim_IntList" not in routed:
        opts["renormalize"] = False
    if grouped:
        calls = [n for n in group if flat.scope[n][-1] == f"{path}.gate"]
        more = _grouped(gate, num, calls)
        if isinstance(more, str):
            return more
        opts |= more
    if shared is not None:
        ran = {str(n.target) for n in group if f"{path}.shared_experts" in flat.scope[n]}
        width = _shared(shared, act, ran)
        if isinstance(width, str):
            return width
        opts["shared_features"] = width
    return "mixture_of_experts", opts


def _grouped(gate: Any, num: int, calls: list[fx.Node]) -> dict[str, Any] | str:
    """DeepSeek-V3's router options: groups, top groups, the score-correction bias, the
    renormalisation and the routed scale, from the router's attributes; its one ``mul``
    (``calls``: the router's) must be by that scale."""
    groups = getattr(gate, "n_group", getattr(gate, "num_group", None))
    top, norm = getattr(gate, "topk_group", None), getattr(gate, "norm_topk_prob", None)
    scale = getattr(gate, "routed_scaling_factor", 1.0)
    bias = getattr(gate, "e_score_correction_bias", None)
    if not (isinstance(groups, int) and isinstance(top, int) and isinstance(norm, bool)):
        return "a grouped router without n_group, topk_group and norm_topk_prob"
    if bias is not None and tuple(bias.shape) != (num,):
        return "a score-correction bias that is not one value per expert"
    muls = [n for n in calls if str(n.target) == "aten.mul.Tensor"]
    if len(muls) > 1 or any(n.args[1] != scale for n in muls) or (not muls and scale != 1):
        return "a grouped router whose weights are scaled other than by routed_scaling_factor"
    out: dict[str, Any] = {"num_groups": groups, "top_groups": top}
    if bias is not None:
        out["score_correction_bias"] = True
    if not norm:
        out["renormalize"] = False
    if float(scale) != 1.0:
        out["routed_scaling_factor"] = float(scale)
    return out


def _shared(shared: Any, act: str, ran: set[str]) -> int | str:
    """The width of the shared expert: a gated MLP (gate_proj, up_proj, down_proj, no biases)
    of the routed experts' activation, whose calls (``ran``) are its linears, act and mul."""
    kids = dict(shared.named_children())
    projs = [kids.get(k) for k in ("gate_proj", "up_proj", "down_proj")]
    if not all(isinstance(p, nn.Linear) and p.bias is None for p in projs):
        return "a shared expert that is not a gated MLP of bias-free nn.Linear"
    kind = _ACTS.get(type(getattr(shared, "act_fn", None)).__name__)
    if kind != act or set(kids) - {"gate_proj", "up_proj", "down_proj", "act_fn"}:
        return f"a shared expert whose activation is not the experts' {act}"
    other = sorted(ran - _SHARED_OPS)
    if other:
        return f"a shared expert that also computes {', '.join(other)}"
    gate_proj: Any = projs[0]
    return int(gate_proj.out_features)
