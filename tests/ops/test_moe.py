"""Mixture of experts (archcomp/ops/moe.py): mixture_of_experts. Shapes, located errors,
declared parameters, MACs and the activation rule; forward and gradients against
transformers' MixtralSparseMoeBlock, DeepseekV3MoE and Qwen2MoeSparseMoeBlock, a small
Mixtral model (attention and MoE decoder layers) against MixtralForCausalLM, and the
Switch/Mixtral load-balancing loss; planted bugs (wrong k, missing renormalization, wrong
routing group) fail; each expert runs only on its own tokens; torch.compile(fullgraph=True)
and torch.export.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lowering import (
    check_declared,
    check_equivalent,
    compile_for_test,
    compile_spec,
    fails,
    hf_names,
    macs,
    out,
    redraw,
    run,
    spec,
)
from numerics import assert_same
from torch import nn

import archcomp
from archcomp import load_graph
from archcomp.ir.dims import Sym, mul

B, T = (Sym.symbol(n) for n in "BT")

OPS = {"mixture_of_experts": ("feedforward", "Mixture of Experts")}
MOE = "op: mixture_of_experts, num_experts: 8, top_k: 2, expert_features: 32"


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def moe_spec(args: str, x: str = "[B, T, 16]") -> str:
    return spec(
        f"x: {x}", f"- {{id: moe, op: mixture_of_experts, {args}}}", "{y: moe, aux: moe.aux_loss}"
    )


def test_shapes_inferred_width_and_label() -> None:
    assert out("x: [B, T, 16]", MOE) == (B, T, 16)
    assert out("x: [B, T, 16]", MOE, result="y") == (B, T, 16)
    g = load_graph(moe_spec("num_experts: 8, top_k: 2, expert_features: 32"))
    aux = g.output_types["aux"]
    assert aux is not None and aux.shape == () and aux.dtype == "float32"
    node = g.nodes["moe"]
    assert getattr(node.args, "in_features", None) == 16
    assert node.op.style.words(node.args) == "Mixture of Experts (2 of 8)"


@pytest.mark.parametrize(
    ("args", "params", "buffers"),
    [
        (
            "num_experts: 8, top_k: 2, expert_features: 32",
            {
                "gate.weight": (8, 16),
                "experts.gate_up_proj": (8, 64, 16),
                "experts.down_proj": (8, 16, 32),
            },
            {},
        ),
        (
            "num_experts: 4, top_k: 1, expert_features: 8, gated: false, router_bias: true",
            {
                "gate.weight": (4, 16),
                "gate.bias": (4,),
                "experts.up_proj": (4, 8, 16),
                "experts.down_proj": (4, 16, 8),
            },
            {},
        ),
        (
            "num_experts: 8, top_k: 2, expert_features: 12, scoring: sigmoid, num_groups: 4, "
            "top_groups: 2, score_correction_bias: true, shared_features: 24, shared_gate: true",
            {
                "gate.weight": (8, 16),
                "experts.gate_up_proj": (8, 24, 16),
                "experts.down_proj": (8, 16, 12),
                "shared_experts.gate_proj.weight": (24, 16),
                "shared_experts.up_proj.weight": (24, 16),
                "shared_experts.down_proj.weight": (16, 24),
                "shared_expert_gate.weight": (1, 16),
            },
            {"gate.e_score_correction_bias": (8,)},
        ),
    ],
)
def test_params_and_buffers_match_the_module(
    args: str, params: dict[str, Any], buffers: dict[str, Any]
) -> None:
    g, gm = compile_spec(moe_spec(args))  # check_state: declared == named_parameters/buffers
    node = g.nodes["moe"]
    assert node.op.param_shapes(node.args) == params
    assert node.op.buffer_shapes(node.args) == buffers
    # the correction bias is persistent: it is in DeepSeek-V3's checkpoints
    assert set(buffers) <= {k.split(".", 1)[1] for k in gm.state_dict()}


def test_macs_count_the_top_k_experts_not_all() -> None:
    g = load_graph(moe_spec("num_experts: 8, top_k: 2, expert_features: 32, shared_features: 24"))
    n = mul(B, T)
    assert macs(g, "moe") == mul(n, 16 * 8 + 2 * 3 * 16 * 32 + 3 * 16 * 24)
    g = load_graph(moe_spec("num_experts: 8, top_k: 1, expert_features: 32, gated: false"))
    assert macs(g, "moe") == mul(n, 16 * 8 + 1 * 2 * 16 * 32)


@pytest.mark.parametrize(
    ("args", "message", "at"),
    [
        ("num_experts: 4, top_k: 5, expert_features: 8", "top_k 5 exceeds num_experts 4", "5"),
        (
            "num_experts: 6, top_k: 2, expert_features: 8, num_groups: 4",
            "num_groups 4 does not divide num_experts 6",
            "4",
        ),
        (
            "num_experts: 8, top_k: 2, expert_features: 8, num_groups: 2, top_groups: 3",
            "top_groups 3 exceeds num_groups 2",
            "3",
        ),
        (
            "num_experts: 8, top_k: 3, expert_features: 8, num_groups: 4, top_groups: 1",
            "top_k 3 exceeds the 2 experts of the top_groups 1 groups a token may choose from",
            "3",
        ),
        (
            "num_experts: 8, top_k: 2, expert_features: 8, shared_gate: true",
            "shared_gate needs a shared expert",
            "true",
        ),
    ],
)
def test_located_errors(args: str, message: str, at: str) -> None:
    fails("x: [B, 16]", f"op: mixture_of_experts, {args}", message, at)


def test_integer_input_is_refused() -> None:
    fails(
        "x: {shape: [B, 16], dtype: int64}",
        f"in: x, {MOE}",
        "mixture_of_experts needs a floating-point input, found int64",
        "x",
    )


# -- against transformers ---------------------------------------------------------------------


def redraw_experts(ref: nn.Module, seed: int) -> None:
    """Every parameter and buffer of a reference MoE re-drawn: matrices (and stacked expert
    matrices) ~ N(0, 1/fan_in), the correction bias ~ N(0, 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in ref.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
        for _, b in ref.named_buffers():
            b.copy_(0.1 * torch.randn(b.shape, generator=gen))


def check_against_hf(args: str, ref: nn.Module, rename: dict[str, str] | None = None) -> None:
    """The op (from ``args``) against ``ref``: forward and every gradient (tests/NUMERICS.md),
    the reference's weights and buffers copied in."""
    model = compile_for_test(load_graph(moe_spec(args, "[2, 12, 16]")))
    weights = hf_names(model, ref, rename or {})
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(dict(ref.named_buffers())[name.split(".", 1)[1]])
    x = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(3))
    check_equivalent(model, ref, (x,), weights)


def mixtral(**kw: Any) -> nn.Module:
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    cfg = MixtralConfig(hidden_size=16, intermediate_size=32, num_local_experts=8, **kw)
    ref = MixtralSparseMoeBlock(cfg)
    redraw_experts(ref, 0)
    return ref


def deepseek(**kw: Any) -> nn.Module:
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    base = dict(n_group=4, topk_group=2, norm_topk_prob=True)
    cfg = DeepseekV3Config(
        hidden_size=16,
        moe_intermediate_size=12,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=2,
        routed_scaling_factor=2.5,
        **{**base, **kw},
    )
    ref = DeepseekV3MoE(cfg)
    redraw_experts(ref, 1)
    return ref


DEEPSEEK = (
    "num_experts: 8, top_k: 2, expert_features: 12, scoring: sigmoid, num_groups: 4, "
    "top_groups: 2, score_correction_bias: true, routed_scaling_factor: 2.5, shared_features: 24"
)


def test_equals_mixtral_sparse_moe_block(torch_threads: int) -> None:
    check_against_hf(
        "num_experts: 8, top_k: 2, expert_features: 32", mixtral(num_experts_per_tok=2)
    )


def test_equals_deepseek_v3_moe(torch_threads: int) -> None:
    check_against_hf(DEEPSEEK, deepseek())


def test_equals_qwen2_moe_block_with_gated_shared_expert(torch_threads: int) -> None:
    from transformers import Qwen2MoeConfig
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock

    cfg = Qwen2MoeConfig(
        hidden_size=16,
        moe_intermediate_size=8,
        shared_expert_intermediate_size=20,
        num_experts=6,
        num_experts_per_tok=3,
        norm_topk_prob=False,
    )
    ref = Qwen2MoeSparseMoeBlock(cfg)
    redraw_experts(ref, 2)
    args = (
        "num_experts: 6, top_k: 3, expert_features: 8, renormalize: false, "
        "shared_features: 20, shared_gate: true"
    )
    check_against_hf(args, ref, {"shared_experts.": "shared_expert."})


@pytest.mark.parametrize(
    ("args", "ref"),
    [
        # wrong k: the reference routes each token to 1 expert, the op to 2
        ("num_experts: 8, top_k: 2, expert_features: 32", lambda: mixtral(num_experts_per_tok=1)),
        # missing renormalization of the top-k weights
        (DEEPSEEK, lambda: deepseek(norm_topk_prob=False)),
        # wrong routing group: the best 1 of 4 groups instead of 2
        (DEEPSEEK, lambda: deepseek(topk_group=1)),
    ],
    ids=["wrong_k", "no_renormalization", "wrong_group"],
)
def test_planted_routing_bugs_fail(args: str, ref: Any, torch_threads: int) -> None:
    with pytest.raises(AssertionError):
        check_against_hf(args, ref())


def test_aux_loss_is_mixtrals_load_balancing_loss() -> None:
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    model = compile_for_test(
        load_graph(moe_spec("num_experts: 8, top_k: 2, expert_features: 32", "[2, 12, 16]"))
    )
    x = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(4))
    got = run(model, x)["aux"]
    w = dict(model.named_parameters())["moe.gate.weight"]
    logits = x.reshape(-1, 16) @ w.T  # (N, E)
    want = load_balancing_loss_func((logits,), 8, 2)
    assert_same(got, want)
    # it trains the router: gradients reach the gate's weight
    (gw,) = torch.autograd.grad(got, [w])
    assert gw.abs().sum() > 0
    # a planted bug: the loss of top-1 routing differs
    top1 = load_balancing_loss_func((logits,), 8, 1)
    assert isinstance(top1, torch.Tensor) and not torch.allclose(got, top1)


def test_each_expert_runs_only_on_its_tokens() -> None:
    """Sparse: the experts' matmuls see N k rows in all, never N E."""
    model = compile_for_test(
        load_graph(moe_spec("num_experts: 8, top_k: 2, expert_features: 32", "[2, 12, 16]"))
    )
    rows: list[int] = []
    real = torch.mm

    def counting(x: torch.Tensor, w: torch.Tensor, **kw: Any) -> torch.Tensor:
        if w.shape == (16, 64):  # an expert's gate_up projection, transposed
            rows.append(x.shape[0])
        return real(x, w, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "mm", counting)
        run(model, torch.randn(2, 12, 16))
    assert len(rows) == 8 and sum(rows) == 2 * 12 * 2


@pytest.mark.parametrize(
    "args",
    [
        "num_experts: 8, top_k: 2, expert_features: 32",
        "num_experts: 8, top_k: 2, expert_features: 32, gated: false",
        DEEPSEEK + ", shared_gate: true",
    ],
)
def test_activations_traced_and_by_rule_are_what_autograd_keeps(args: str) -> None:
    """The summary's meta forward runs the routing (the grouped experts' fake kernel) and
    counts the bytes autograd keeps in a real float32 forward; the op's rule, its fallback,
    gives the same."""
    text = moe_spec(args, "[4, 8, 16]")
    g, model = compile_spec(text)
    skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            kept[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run(model, torch.randn(4, 8, 16, requires_grad=True))
    s = archcomp.summary(text)
    row = next(r for r in s.rows if r.name == "moe")
    assert row.activation_bytes == sum(kept.values())
    assert row.activation_source == "trace"
    node = g.nodes["moe"]
    x = next(iter(g.inputs.values())).type
    assert node.op.activations is not None
    assert node.op.activations(node.args, {"x": x}, node.outputs) * 4 == sum(kept.values())
    assert row.op == "mixture_of_experts (2 of 8 experts)"


def test_emitted_source_runs_the_same_routing(tmp_path: Any) -> None:
    """--emit-python inlines archcomp/nn/moe.py: the standalone model gives the same out and
    loss bitwise (every routing option on)."""
    import importlib.util

    from archcomp.backends.torch.emit import emit_python

    args = DEEPSEEK + ", shared_gate: true, gated: false, activation: gelu_tanh, router_bias: true"
    model = compile_for_test(load_graph(moe_spec(args, "[2, 6, 16]")))
    path = tmp_path / "emitted.py"
    path.write_text(emit_python(model))
    spec_ = importlib.util.spec_from_file_location("emitted_moe", path)
    assert spec_ is not None and spec_.loader is not None
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    ejected = getattr(mod, type(model).__name__)()
    ejected.load_state_dict(model.state_dict())
    x = torch.randn(2, 6, 16)
    got, want = ejected(x), run(model, x)
    assert_same(got["y"], want["y"])
    assert_same(got["aux"], want["aux"])


@pytest.mark.parametrize("args", ["num_experts: 4, top_k: 2, expert_features: 8", DEEPSEEK])
def test_compiles_fullgraph_and_exports_with_the_same_result_and_gradients(args: str) -> None:
    """The tokens per expert are data only inside the grouped-experts operator: the whole
    forward is one torch.compile graph and one torch.export program, both equal to eager
    (forward, and gradients through the compiled module)."""
    model = compile_for_test(load_graph(moe_spec(args, "[2, 6, 16]")))
    x = torch.randn(2, 6, 16)
    want = run(model, x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    exported = torch.export.export(model, (x,)).module()
    assert "grouped_experts" in str(torch.export.export(model, (x,)).graph)
    for got in (run(compiled, x), exported(x)):
        assert_same(got["y"], want["y"])
        assert_same(got["aux"], want["aux"])
    grads = []
    for m in (model, compiled):
        xi = x.clone().requires_grad_()
        out = run(m, xi)
        (out["y"].square().sum() + out["aux"]).backward()
        grads.append([xi.grad, *(p.grad for p in model.parameters())])
        model.zero_grad(set_to_none=True)
    for a, b in zip(*grads, strict=True):
        assert_same(a, b)


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh", "relu"])
def test_grouped_experts_op_equals_a_per_expert_loop(gated: bool, activation: str) -> None:
    """The operator (with an expert given no rows) against autograd through a plain loop:
    output and the gradients of the rows and both stacked weights; torch.library.opcheck
    checks its fake kernel and autograd registration."""
    from archcomp.nn.grouped_experts import ACTIVATIONS, grouped_experts

    gen = torch.Generator().manual_seed(3)
    counts = torch.tensor([3, 0, 5, 2])
    f = 6
    x = torch.randn(10, 8, generator=gen, requires_grad=True)
    up = torch.randn(4, 2 * f if gated else f, 8, generator=gen, requires_grad=True)
    down = torch.randn(4, 8, f, generator=gen, requires_grad=True)
    act = ACTIVATIONS[activation]
    outs = []
    for e, rows in enumerate(x.split(counts.tolist())):
        h = rows @ up[e].T
        a = act(h[:, :f]) * h[:, f:] if gated else act(h)
        outs.append(a @ down[e].T)
    want = torch.cat(outs)
    got = grouped_experts(x, counts, up, down, gated, activation)
    assert_same(got, want)
    gy = torch.randn(want.shape, generator=gen)
    for a, b in zip(
        torch.autograd.grad(got, (x, up, down), gy),
        torch.autograd.grad(want, (x, up, down), gy),
        strict=True,
    ):
        assert_same(a, b)
    torch.library.opcheck(
        torch.ops.archcomp.grouped_experts.default, (x, counts, up, down, gated, activation)
    )


# -- a Mixtral model: attention and MoE decoder layers -------------------------------------------

MIXTRAL = """
archcomp: 1
name: mixtral
blocks:
  mixtral_block:
    params: {d_model: 32, h: 4, n_kv_heads: 2, d_ff: 24, experts: 4, k: 2}
    inputs: [x]
    nodes:
      - {id: input_layernorm, op: rms_norm, eps: 1.0e-5}
      - {id: self_attn, op: multi_head_attention, num_heads: "${h}",
         num_kv_heads: "${n_kv_heads}", causal: true, bias: false,
         rope: {theta: 1000000.0, max_len: 32}}
      - {id: res_1, op: add, in: [x, self_attn]}
      - {id: post_attention_layernorm, op: rms_norm, eps: 1.0e-5}
      - {id: mlp, op: mixture_of_experts, num_experts: "${experts}", top_k: "${k}",
         expert_features: "${d_ff}"}
      - {id: res_2, op: add, in: [res_1, mlp]}
    outputs: res_2
inputs:
  ids: {shape: [B, T], dtype: int64}
nodes:
  - {id: embed_tokens, op: embedding, num_embeddings: 50, embedding_dim: 32}
  - {id: layers, op: mixtral_block, repeat: 2}
  - {id: norm, op: rms_norm, eps: 1.0e-5}
  - {id: lm_head, op: linear, out_features: 50, bias: false}
outputs: {logits: lm_head}
"""


def test_mixtral_model_equals_transformers() -> None:
    """Two decoder layers (grouped-query attention with RoPE, then the MoE) with embedding,
    final norm and head, against MixtralForCausalLM: logits and every gradient."""
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "eager"
    ref = MixtralForCausalLM(cfg).eval()
    redraw(ref, 6)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in ref.parameters():
            if p.dim() == 3:  # stacked experts: N(0, 1/fan_in) as the other matrices
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    model = compile_for_test(load_graph(MIXTRAL)).eval()
    theirs = dict(ref.named_parameters())
    weights = {}
    for name, _ in model.named_parameters():
        key = name.replace("out_proj", "o_proj")
        weights[name] = theirs[key if key.startswith("lm_head") else f"model.{key}"]
    ids = torch.randint(0, 50, (2, 11), generator=torch.Generator().manual_seed(8))
    check_equivalent(model, lambda i: ref(i).logits, (ids,), weights)


def test_a_block_with_a_mixture_of_experts_is_drawn_as_feed_forward() -> None:
    from archcomp.backends.graphviz.style import block_family

    assert block_family({"norm", "feedforward", "arith"}) == "feedforward"
    assert block_family({"norm", "attention", "feedforward", "arith"}) == "attention"
