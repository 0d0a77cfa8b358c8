"""Mixture of experts: a top-k router over E feed-forward experts, each token running only the
experts it is routed to (Mixtral, DeepSeek-V3, Qwen-MoE, OLMoE)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Shape, add, mul, prod
from archcomp.ir.drawing import Figure, Part
from archcomp.ops.common import need_float
from archcomp.ops.registry import LowerCtx, OpArgs, OpDef, ShapeCtx, ShapeError, Style, register


class MixtureOfExpertsArgs(OpArgs):
    """x (..., d) -> out (..., d) and aux_loss (): each token runs ``top_k`` of ``num_experts``
    experts, chosen by a linear router, and sums their outputs weighted by the router.

    Router: ``scores = softmax(x W^T)`` (Mixtral, Qwen-MoE, OLMoE) or ``sigmoid`` (DeepSeek-V3);
    the top ``top_k`` of ``scores`` (plus the ``e_score_correction_bias`` buffer with
    ``score_correction_bias``, among the ``top_groups`` best of ``num_groups`` groups) are
    chosen; their weights are their scores, renormalized to sum to 1 with ``renormalize``,
    times ``routed_scaling_factor``. Experts: SwiGLU (``gated``, ``activation: silu``), GeGLU
    (``gated``, ``activation: gelu``) or an MLP (``gated: false``) of width
    ``expert_features``, no biases. ``shared_features`` adds a dense expert of that width run
    on every token (DeepSeek-V3: ``moe_intermediate_size * n_shared_experts``), gated by
    ``sigmoid(shared_expert_gate x)`` with ``shared_gate`` (Qwen-MoE).
    """

    num_experts: int = Field(gt=0, description="routed experts E")
    top_k: int = Field(gt=0, description="experts per token k (at most num_experts)")
    expert_features: int = Field(gt=0, description="each expert's hidden width F")
    gated: bool = Field(
        default=True, description="act(gate x) * up x (SwiGLU, GeGLU); else act(up x)"
    )
    activation: Literal["silu", "gelu", "gelu_tanh", "relu"] = Field(
        default="silu", description="the experts' activation"
    )
    scoring: Literal["softmax", "sigmoid"] = Field(
        default="softmax", description="router scores: softmax over experts, or sigmoid each"
    )
    renormalize: bool = Field(default=True, description="the top-k weights sum to 1")
    num_groups: int = Field(default=1, gt=0, description="expert groups (DeepSeek-V3 n_group)")
    top_groups: int | None = Field(
        default=None, gt=0, description="groups a token may choose from (default: all)"
    )
    score_correction_bias: bool = Field(
        default=False, description="a bias buffer added to the scores for the choice only"
    )
    routed_scaling_factor: float = Field(default=1.0, gt=0.0, description="scales the weights")
    router_bias: bool = Field(default=False, description="bias on the router's linear")
    shared_features: int = Field(
        default=0, ge=0, description="width of a shared expert run on every token (0: none)"
    )
    shared_gate: bool = Field(default=False, description="sigmoid gate on the shared expert")
    in_features: int | None = Field(default=None, gt=0, description="d, inferred from x")


def moe_label(a: MixtureOfExpertsArgs) -> str:
    """'Mixture of Experts (2 of 8)': the box shows how many experts a token runs."""
    return f"Mixture of Experts ({a.top_k} of {a.num_experts})"


def moe_figure(a: MixtureOfExpertsArgs, ports: frozenset[str]) -> Figure:
    """The papers' drawing (Switch Transformer, Mixtral, DeepSeekMoE): a router choosing k of
    E experts, their weighted sum, and the shared expert every token runs."""
    act = {"silu": "SwiGLU", "gelu": "GeGLU", "gelu_tanh": "GeGLU", "relu": "ReGLU"}
    kind = act[a.activation] if a.gated else f"MLP, {a.activation.upper()}"
    score = "Softmax" if a.scoring == "softmax" else "Sigmoid"
    parts = [
        Part("router", "Router", "linear"),
        Part("select", f"{score}, Top-{a.top_k}", "softmax"),
        Part("expert", f"Expert ({kind})", "feedforward"),
        Part("combine", "Weighted Sum", "addnorm"),
    ]
    edges = [("router", "select"), ("select", "combine"), ("expert", "combine")]
    routes = [("x", "router"), ("x", "expert")]
    if a.shared_features:
        parts.append(Part("shared", f"Shared Expert ({kind})", "feedforward"))
        edges.append(("shared", "combine"))
        routes.append(("x", "shared"))
    return Figure(
        parts=tuple(parts),
        edges=tuple(edges),
        ports=tuple(routes),
        result="combine",
        stack=("expert",),
        stack_label=f"E× ({a.top_k} of E = {a.num_experts} experts per token)",
        same_rank=(("router", "expert", "shared") if a.shared_features else ("router", "expert"),),
    )


def _check_routing(a: MixtureOfExpertsArgs) -> None:
    if a.top_k > a.num_experts:
        raise ShapeError(
            f"top_k {a.top_k} exceeds num_experts {a.num_experts}",
            arg="top_k",
            hint="each token picks top_k distinct experts",
        )
    if a.num_experts % a.num_groups != 0:
        raise ShapeError(
            f"num_groups {a.num_groups} does not divide num_experts {a.num_experts}",
            arg="num_groups",
            hint="the experts split into equal groups",
        )
    top_groups = a.top_groups if a.top_groups is not None else a.num_groups
    if top_groups > a.num_groups:
        raise ShapeError(
            f"top_groups {top_groups} exceeds num_groups {a.num_groups}", arg="top_groups"
        )
    reachable = top_groups * (a.num_experts // a.num_groups)
    if a.top_k > reachable:
        raise ShapeError(
            f"top_k {a.top_k} exceeds the {reachable} experts of the top_groups {top_groups} "
            "groups a token may choose from",
            arg="top_k",
        )
    if a.shared_gate and not a.shared_features:
        raise ShapeError(
            "shared_gate needs a shared expert", arg="shared_gate", hint="give shared_features"
        )


def _moe_shape(ctx: ShapeCtx) -> dict[str, TensorType]:
    x = ctx.x
    need_float(x, what="mixture_of_experts")
    if x.rank < 1:
        ctx.need_rank(x, (1, 2, 3), "x", "mixture_of_experts")
    ctx.infer("in_features", ctx.concrete(x.shape[-1], "the input's last dim (in_features)", "x"))
    _check_routing(ctx.args)
    return {"out": x, "aux_loss": TensorType((), x.dtype)}


def _ffn_params(prefix: str, d: int, f: int, gated: bool, stacked: int | None) -> dict[str, Shape]:
    """The up (or gate and up) and down projections: stacked (E, ...) tensors of the routed
    experts (transformers' Mixtral layout), ``nn.Linear`` weights of the shared one."""
    if stacked is not None:
        up = "gate_up_proj" if gated else "up_proj"
        e = stacked
        return {f"{prefix}.{up}": (e, 2 * f if gated else f, d), f"{prefix}.down_proj": (e, d, f)}
    names = ("gate_proj", "up_proj") if gated else ("up_proj",)
    p: dict[str, Shape] = {f"{prefix}.{n}.weight": (f, d) for n in names}
    p[f"{prefix}.down_proj.weight"] = (d, f)
    return p


def _moe_params(a: MixtureOfExpertsArgs) -> dict[str, Shape]:
    d, e = a.in_features or 0, a.num_experts
    p: dict[str, Shape] = {"gate.weight": (e, d)}
    if a.router_bias:
        p["gate.bias"] = (e,)
    p.update(_ffn_params("experts", d, a.expert_features, a.gated, e))
    if a.shared_features:
        p.update(_ffn_params("shared_experts", d, a.shared_features, a.gated, None))
    if a.shared_gate:
        p["shared_expert_gate.weight"] = (1, d)
    return p


def _moe_buffers(a: MixtureOfExpertsArgs) -> dict[str, Shape]:
    return {"gate.e_score_correction_bias": (a.num_experts,)} if a.score_correction_bias else {}


def _moe_macs(a: MixtureOfExpertsArgs, ins: Any, outs: dict[str, TensorType]) -> Dim:
    """The router (N d E), then k experts per token (3 d F each gated, 2 d F ungated), the
    shared expert on every token and its gate: the experts a token does not run cost nothing."""
    n = prod(ins["x"].shape[:-1])
    d = a.in_features or 0
    mats = 3 if a.gated else 2
    per_token = d * a.num_experts + a.top_k * mats * d * a.expert_features
    per_token += mats * d * a.shared_features + (d if a.shared_gate else 0)
    return mul(n, per_token)


def _moe_activations(a: MixtureOfExpertsArgs, ins: Any, outs: dict[str, TensorType]) -> Dim:
    """What autograd keeps in a training forward; the summary's meta forward measures the
    same (the grouped experts have a fake kernel), this rule is its fallback. Per token: the
    router's input and probabilities (d + E), their sum with sigmoid scores (1), the
    renormalization's sum (1), the top-k weights and their sorted copy (2k), three int64
    index vectors of k entries (the choice, the sort, the token of each slot: 6k, counted as
    float32 elements). Per (token, chosen expert): the gathered input, the experts' output
    and its weighted copy (3d), the first projection (2F gated, F not). The shared expert on
    every token (4F gated, 2F not), its sigmoid gate and the gated product (1 + d); and once
    the E expert fractions of the loss and the E int64 counts (3E). Exact in float32
    (tests/ops/test_moe.py)."""
    n = prod(ins["x"].shape[:-1])
    d, e, k = a.in_features or 0, a.num_experts, a.top_k
    per_token = d + e + (1 if a.renormalize else 0) + (1 if a.scoring == "sigmoid" else 0)
    per_token += 2 * k + 6 * k
    routed_f, shared_f = (2, 4) if a.gated else (1, 2)
    per_token += k * (3 * d + routed_f * a.expert_features) + shared_f * a.shared_features
    if a.shared_gate:
        per_token += 1 + d
    return add(mul(n, per_token), 3 * e)


def _moe_lower(c: LowerCtx) -> Any:
    import operator

    from archcomp.nn.moe import MixtureOfExperts

    a: MixtureOfExpertsArgs = c.args
    moe = MixtureOfExperts(
        a.in_features or 0,
        a.num_experts,
        a.top_k,
        a.expert_features,
        gated=a.gated,
        activation=a.activation,
        scoring=a.scoring,
        renormalize=a.renormalize,
        num_groups=a.num_groups,
        top_groups=a.top_groups if a.top_groups is not None else a.num_groups,
        score_correction_bias=a.score_correction_bias,
        routed_scaling_factor=a.routed_scaling_factor,
        router_bias=a.router_bias,
        shared_features=a.shared_features,
        shared_gate=a.shared_gate,
        **c.factory,
    )
    res = c.module(moe)(c.x)  # (out (..., d), aux_loss ())
    return {"out": c.call(operator.getitem, res, 0), "aux_loss": c.call(operator.getitem, res, 1)}


MOE_FIGURE = moe_figure(
    MixtureOfExpertsArgs(num_experts=8, top_k=2, expert_features=1), frozenset()
)

MIXTURE_OF_EXPERTS = register(
    OpDef(
        "mixture_of_experts",
        MixtureOfExpertsArgs,
        _moe_shape,
        Style(
            "feedforward",
            "Mixture of Experts",
            label_for=moe_label,
            figure=MOE_FIGURE,
            figure_for=moe_figure,
            figure_open=True,
        ),
        results=("out", "aux_loss"),
        params=_moe_params,
        buffers=_moe_buffers,
        macs=_moe_macs,
        activations=_moe_activations,
        lower=_moe_lower,
        note=lambda a: f"{a.top_k} of {a.num_experts} experts",
        doc="Sparse mixture of experts (Mixtral, DeepSeek-V3, Qwen-MoE, OLMoE): a linear "
        "router (softmax or sigmoid scores, top_k, optional renormalization, group-limited "
        "choice, score-correction bias, routed scaling factor) picks top_k of num_experts "
        "SwiGLU, GeGLU or MLP experts per token; tokens are sorted by expert and each expert "
        "runs once on its own tokens. Optional shared expert (shared_features, shared_gate). "
        "Results: out (like x) and aux_loss, the Switch/Mixtral load-balancing loss "
        "E * sum_e f_e P_e. Parameters as transformers' Mixtral and DeepSeek-V3 name them: "
        "gate.weight, experts.gate_up_proj (E, 2F, d) (up_proj (E, F, d) ungated), "
        "experts.down_proj (E, d, F), shared_experts.{gate,up,down}_proj.weight, "
        "shared_expert_gate.weight; buffer gate.e_score_correction_bias. MACs: the router and "
        "the top_k experts each token runs (not all E). The tokens per expert are data, seen "
        "only inside one opaque operator (torch.ops.archcomp.grouped_experts, with a fake "
        "kernel and its own backward): torch.compile(fullgraph=True), torch.export and the "
        "summary's meta forward trace the whole op.",
    )
)
