"""A transformers sparse mixture-of-experts block (Mixtral's ``MixtralSparseMoeBlock``: a
router ``gate`` and the stacked ``experts``) recognised as archcomp's ``mixture_of_experts``:
the router's linear, softmax (or sigmoid) scores, top-k and renormalisation read from its
calls, the experts' sizes and activation from their stacked tensors. The op routes sparsely
(top_k of E experts per token), as the module does: never a dense approximation.
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
_BLOCK_OPS = {"aten.view.default", "aten.reshape.default"}
_ACTS = {"SiLUActivation": "silu", "SiLU": "silu", "GELUTanh": "gelu_tanh", "ReLU": "relu"}
_ACTS |= {"PytorchGELUTanh": "gelu_tanh", "GELUActivation": "gelu"}


def is_moe(module: nn.Module) -> bool:
    kids = dict(module.named_children())
    return set(kids) == {"gate", "experts"} and hasattr(kids["experts"], "down_proj")


def moe_op(flat: Flat, path: str, m: nn.Module, group: list[fx.Node]) -> Op | str:
    """``mixture_of_experts`` with its options; a reason where the block computes more."""
    gate: Any = m.get_submodule("gate")
    experts: Any = m.get_submodule("experts")
    own = {str(n.target) for n in group if flat.scope[n][-1] == path}
    routed = {str(n.target) for n in group if flat.scope[n][-1] == f"{path}.gate"}
    extra = sorted((own - _BLOCK_OPS) | (routed - _ROUTER_OPS))
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
    if "aten.sum.dim_IntList" not in routed:
        opts["renormalize"] = False
    return "mixture_of_experts", opts
