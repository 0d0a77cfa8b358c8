"""Learned tensors (archcomp/ops/parameter.py): parameter (a ViT class token: shapes, errors,
seeded default init, export with a dynamic batch) and layer_scale (shapes, errors, init, and
forward and gradients against a hand-written reference, channels last and first).

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import numerics
import pytest
import torch
from lowering import check_declared, compile_spec, errors_of, fails, macs, out, run, spec
from numerics import RoundingChains, assert_same
from torch.testing import assert_close

import archcomp
from archcomp import load_graph
from archcomp.ir.dims import Sym, mul

B, T, H, W = (Sym.symbol(n) for n in "BTHW")


OPS = {
    "parameter": ("embedding", "Parameter"),
    "buffer": ("embedding", "Buffer"),
    "layer_scale": ("arith", "Layer Scale"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


VIT_TOKENS = spec(
    "x: [B, 4, 8]",
    """
    - {id: cls, op: parameter, shape: [1, 1, 8], init: zeros}
    - {id: cls_b, op: expand, in: {x: cls, like: x}, shape: [B, -1, -1]}
    - {id: tokens, op: concat, in: [cls_b, x], dim: 1}
    - {id: pos, op: parameter, shape: [1, 5, 8]}
    - {id: n, op: add, in: [tokens, pos]}
    """,
)


def test_parameter_and_expand_build_a_class_token() -> None:
    g, gm = compile_spec(VIT_TOKENS)
    assert g.nodes["cls"].outputs["out"].shape == (1, 1, 8)
    assert g.nodes["cls_b"].outputs["out"].shape == (B, 1, 8)
    assert g.output_types["y"].shape == (B, 5, 8)  # type: ignore[union-attr]
    assert list(gm.state_dict()) == ["cls.weight", "pos.weight"]
    assert torch.equal(gm.cls.weight, torch.zeros(1, 1, 8))  # init: zeros
    assert "cls_b = cls.expand(cls_b_size, -1, -1)" in gm.code
    with torch.no_grad():
        gm.cls.weight.normal_()
    x = torch.randn(3, 4, 8)
    y = run(gm, x)["y"]
    want = torch.cat([gm.cls.weight.expand(3, 1, 8), x], 1) + gm.pos.weight
    assert_close(y, want)
    grad = torch.randn(y.shape)
    y.backward(grad)
    assert_close(gm.cls.weight.grad, grad[:, :1].sum(0, keepdim=True))  # summed over the batch
    assert_close(gm.pos.weight.grad, grad.sum(0, keepdim=True))


def test_parameter_default_init_is_seeded_normal_and_exports_with_dynamic_batch() -> None:
    import archcomp

    a = archcomp.build(VIT_TOKENS, seed=3)
    b = archcomp.build(VIT_TOKENS, seed=3)
    assert torch.equal(a.pos.weight, b.pos.weight)
    assert 0.3 < a.pos.weight.std().item() < 2.0  # N(0, 1) over 40 draws, not a constant
    batch = torch.export.Dim("batch", max=64)
    x = torch.randn(3, 4, 8)
    exported = torch.export.export(a, (x,), dynamic_shapes=({0: batch},))
    assert_close(exported.module()(x[:2]), a(x[:2]))


def test_parameter_errors() -> None:
    text = spec(
        "x: [B, 4]", "- {id: p, op: parameter, shape: [4], in: x}\n- {id: n, op: add, in: [x, p]}"
    )
    assert errors_of(text) == ["op 'parameter' takes no input"]
    text = spec(
        "x: [B, 4]",
        "- {id: p, op: parameter, shape: [4], repeat: 2}\n- {id: n, op: add, in: [x, p]}",
    )
    assert errors_of(text) == [
        "cannot repeat op 'parameter': it has no input to chain the copies through"
    ]
    text = spec("x: [B, 4]", "- {id: p, op: parameter, shape: [4]}\n- {id: n, op: relu, in: x}")
    assert errors_of(text) == ["node is never used: no output depends on it"]
    messages = errors_of(
        spec("x: [B, 4]", "- {id: p, op: parameter, shape: [0]}\n- {id: n, op: add, in: [x, p]}")
    )
    assert len(messages) == 1 and "greater than 0" in messages[0]


# -- tensors keyed by the node id (key: self) and named gains (gain_name) ----------------------

VIT_OWN_KEYS = spec(
    "x: [B, 4, 8]",
    """
    - {id: cls_token, op: parameter, shape: [1, 1, 8], key: self, init: zeros}
    - {id: cls_b, op: expand, in: {x: cls_token, like: x}, shape: [B, -1, -1]}
    - {id: tokens, op: concat, in: [cls_b, x], dim: 1}
    - {id: position_embeddings, op: parameter, shape: [1, 5, 8], key: self}
    - {id: n, op: add, in: [tokens, position_embeddings]}
    """,
)


def test_parameter_keyed_by_its_node_id_loads_a_bare_parameter() -> None:
    """ViT's embeddings: bare nn.Parameters ``cls_token`` and ``position_embeddings``, keyed by
    the node ids; values and gradients equal a hand-written module's, weights loaded strictly."""

    class Embeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls_token = torch.nn.Parameter(torch.randn(1, 1, 8))
            self.position_embeddings = torch.nn.Parameter(torch.randn(1, 5, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, 8)
            return torch.cat([cls, x], 1) + self.position_embeddings  # (B, 5, 8)

    g, gm = compile_spec(VIT_OWN_KEYS)
    assert g.nodes["cls_token"].op.param_shapes(g.nodes["cls_token"].args) == {"": (1, 1, 8)}
    assert list(gm.state_dict()) == ["cls_token", "position_embeddings"]
    assert torch.equal(gm.cls_token, torch.zeros(1, 1, 8))  # init: zeros reaches it
    torch.manual_seed(0)
    ref = Embeddings()
    gm.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 4, 8)
    with RoundingChains() as chains:
        y, want = run(gm, x)["y"], ref(x)
        proj = torch.randn_like(want)
        (y * proj).sum().backward()
        (want * proj).sum().backward()
    numerics.assert_close(y, want, chains.tolerance(torch.float32, y, want))
    for name in ("cls_token", "position_embeddings"):
        got, ref_grad = gm.get_parameter(name).grad, ref.get_parameter(name).grad
        numerics.assert_close(got, ref_grad, chains.tolerance(torch.float32))
    summary = archcomp.summary(VIT_OWN_KEYS)
    assert summary.parameters == 48  # 8 + 40, counted once each
    assert [r.parameters for r in summary.rows if r.op == "parameter"] == [8, 40]


def test_parameter_key_self_in_a_block_and_default_key_unchanged() -> None:
    body = """
    dims: {B: 2}
    inputs:
      x: {shape: [B, 8]}
    blocks:
      scale:
        inputs: [x]
        nodes:
          - {id: gain, op: parameter, shape: [8], key: self}
          - {id: g, op: mul, in: [x, gain]}
          - {id: ls, op: layer_scale, gain_name: lambda1, init_value: 0.5}
        outputs: ls
    nodes:
      - {id: layers, op: scale, repeat: 2}
      - {id: w, op: parameter, shape: [8]}
      - {id: n, op: add, in: [layers, w]}
    outputs: {y: n}
    """
    model = archcomp.build("archcomp: 1\nname: m\n" + textwrap.dedent(body), seed=0)
    assert list(model.state_dict()) == [
        "layers.0.gain", "layers.0.ls.lambda1", "layers.1.gain", "layers.1.ls.lambda1",
        "w.weight",
    ]  # fmt: skip
    assert_same(model.layers[1].ls.lambda1.detach(), torch.full((8,), 0.5))
    x = torch.randn(2, 8)
    want = x
    for i in range(2):
        want = want * model.get_parameter(f"layers.{i}.gain") * 0.5
    assert_close(model(x), want + model.w.weight)


def test_layer_scale_gain_name_keys_the_gain() -> None:
    torch.manual_seed(0)
    node = "- {id: n, op: layer_scale, gain_name: lambda1, init_value: 0.1}"
    g, gm = compile_spec(spec("x: [2, 3, 5]", node))
    assert g.nodes["n"].op.param_shapes(g.nodes["n"].args) == {"lambda1": (5,)}
    assert list(gm.state_dict()) == ["n.lambda1"]
    with torch.no_grad():
        gm.n.lambda1.uniform_(0.5, 1.5)
    gamma = gm.n.lambda1.detach().clone().requires_grad_()
    x = torch.randn(2, 3, 5, requires_grad=True)
    with RoundingChains() as chains:
        y = run(gm, x)["y"]
        want = layer_scale_reference(x, gamma, -1)
        proj = torch.randn_like(want)
        got = torch.autograd.grad((y * proj).sum(), (x, gm.n.lambda1))
        wgrads = torch.autograd.grad((want * proj).sum(), (x, gamma))
    numerics.assert_close(y, want, chains.tolerance(torch.float32, y, want))
    for a, b in zip(got, wgrads, strict=True):
        numerics.assert_close(a, b, chains.tolerance(torch.float32))
    fails(
        "x: [B, T, 8]",
        "op: layer_scale, gain_name: dim",
        "gain_name 'dim' is the name of an attribute of the module",
        "dim}",
    )


# -- layer_scale -----------------------------------------------------------------------------


def test_layer_scale_shapes_params_macs_and_errors() -> None:
    assert out("x: [B, T, 8]", "op: layer_scale") == (B, T, 8)
    g = load_graph(spec("x: [B, 4, H, W]", "- {id: n, op: layer_scale, dim: 1}"))
    node = g.nodes["n"]
    assert node.args.num_features == 4
    assert node.op.param_shapes(node.args) == {"gamma": (4,)}
    assert macs(g, "n") == mul(mul(mul(B, H), W), 4)
    fails(
        "x: [B, T, 8]",
        "op: layer_scale, num_features: 6",
        "num_features is 6 but the input gives 8",
        "6}",
    )
    fails(
        "x: [B, T, 8]", "op: layer_scale, dim: 3", "dim=3 is out of range for a rank-3 tensor", "3}"
    )
    fails(
        "x: [B, T, C]",
        "op: layer_scale",
        "the channel dim (dim 2) must be a concrete size, found symbolic 'C'",
        "layer_scale}",
    )
    fails(
        "x: {shape: [B, 8], dtype: int64}",
        "op: layer_scale",
        "layer_scale needs a floating-point input, found int64",
        "layer_scale}",
    )


def layer_scale_reference(x: torch.Tensor, gamma: torch.Tensor, dim: int) -> torch.Tensor:
    """CaiT's diag(gamma) x, written out: ConvNeXt's ``layer_scale_parameter * features``
    channels last, ``gamma[:, None, None] * x`` channels first."""
    view = [1] * x.dim()
    view[dim] = gamma.numel()
    return gamma.view(view) * x


def check_against_reference(
    gm: torch.nn.Module, x: torch.Tensor, gamma: torch.Tensor, ref: Callable[..., torch.Tensor]
) -> None:
    """Forward and the gradients of x and gamma, compiled against ``ref`` (NUMERICS.md rule)."""
    with RoundingChains() as chains:
        y = run(gm, x)["y"]
        want = ref(x, gamma)
        proj = torch.randn_like(want)
        got = torch.autograd.grad((y * proj).sum(), (x, gm.n.gamma))
        wgrads = torch.autograd.grad((want * proj).sum(), (x, gamma))
    numerics.assert_close(y, want, chains.tolerance(torch.float32, y, want))
    for a, b in zip(got, wgrads, strict=True):
        numerics.assert_close(a, b, chains.tolerance(torch.float32))


@pytest.mark.parametrize(
    ("shape", "dim"), [((2, 5, 8), -1), ((2, 3, 5, 8), -1), ((2, 4, 3, 5), 1)], ids=str
)
def test_layer_scale_matches_the_reference_forward_and_backward(
    shape: tuple[int, ...], dim: int
) -> None:
    torch.manual_seed(0)
    dims = ", ".join(str(d) for d in shape)
    node = f"- {{id: n, op: layer_scale, dim: {dim}, init_value: 0.1}}"
    _, gm = compile_spec(spec(f"x: [{dims}]", node))
    assert_same(gm.n.gamma.detach(), torch.full((shape[dim],), 0.1))  # init_value, exactly
    with torch.no_grad():
        gm.n.gamma.uniform_(0.5, 1.5)  # distinct per channel: a wrong axis or order shows
    gamma = gm.n.gamma.detach().clone().requires_grad_()
    x = torch.randn(shape, requires_grad=True)
    check_against_reference(gm, x, gamma, lambda x, g: layer_scale_reference(x, g, dim))
    # planted bugs the check catches: the channels in the wrong order, the gain's mean
    for bug in (lambda g: g.flip(0), lambda g: g.mean().expand_as(g)):
        with pytest.raises(AssertionError):
            check_against_reference(
                gm, x, gamma, lambda x, g, bug=bug: layer_scale_reference(x, bug(g), dim)
            )


def test_layer_scale_defaults_and_node_init() -> None:
    """ConvNeXt's default 1e-6; DINOv2's layerscale_value 1.0 is init_value: 1.0; a node's
    init overrides the default; meta builds allocate nothing."""
    text = spec(
        "x: [B, T, 4]",
        """
        - {id: n, op: layer_scale}
        - {id: m, op: layer_scale, in: n, init_value: 1.0}
        - {id: k, op: layer_scale, in: m, init: {gamma: zeros}}
        """,
        "{y: k}",
    )
    model = archcomp.build(text, seed=0)
    assert_same(model.n.gamma.detach(), torch.full((4,), 1e-6))
    assert_same(model.m.gamma.detach(), torch.ones(4))
    assert_same(model.k.gamma.detach(), torch.zeros(4))
    assert archcomp.build(text, device="meta").n.gamma.is_meta


# -- non-trainable tensors: frozen parameters, buffers, scalars --------------------------------

CLIP_LOGITS = spec(
    "img: [B, 8]\n  txt: [N, 8]",
    """
    - {id: logit_scale, op: parameter, shape: [], init: {weight: {constant: {value: 2.6592}}}}
    - {id: scale, op: exp, in: logit_scale}
    - {id: txt_t, op: transpose, in: txt, dim0: 0, dim1: 1}
    - {id: sim, op: matmul, in: {a: img, b: txt_t}}
    - {id: n, op: mul, in: [sim, scale]}
    """,
)


def _clip_check(gm: torch.nn.Module, img: torch.Tensor, txt: torch.Tensor, ref: Callable) -> None:
    """logits and the gradient of the scalar logit_scale against ``ref(img, txt, s)``."""
    s = gm.logit_scale.weight.detach().clone().requires_grad_()
    with RoundingChains() as chains:
        y = run(gm, img, txt)["y"]
        want = ref(img, txt, s)
        w = torch.randn_like(want)
        (y * w).sum().backward()
        (want * w).sum().backward()
    numerics.assert_close(y, want, chains.tolerance(torch.float32, y, want))
    numerics.assert_close(gm.logit_scale.weight.grad, s.grad, chains.tolerance(torch.float32))
    gm.logit_scale.weight.grad = None


def test_scalar_parameter_is_clips_logit_scale() -> None:
    """A 0-d parameter: shape [] in the graph and state dict (transformers' CLIPModel
    logit_scale), logits exp(s) * img @ txt^T, forward and the scalar's gradient."""
    from transformers import CLIPConfig, CLIPModel

    g, gm = compile_spec(CLIP_LOGITS)
    assert g.nodes["logit_scale"].outputs["out"].shape == ()
    assert g.nodes["scale"].outputs["out"].shape == ()
    tiny = {
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    clip = CLIPModel(
        CLIPConfig(text_config=tiny, vision_config={**tiny, "image_size": 4, "patch_size": 2})
    )
    assert gm.state_dict()["logit_scale.weight"].shape == clip.logit_scale.shape == ()
    assert_same(gm.logit_scale.weight.detach(), clip.logit_scale.detach())  # log(1 / 0.07)
    torch.manual_seed(0)
    img, txt = torch.randn(3, 8), torch.randn(5, 8)
    _clip_check(gm, img, txt, lambda i, t, s: s.exp() * (i @ t.T))
    with pytest.raises(AssertionError):  # a planted bug: the scale not exponentiated
        _clip_check(gm, img, txt, lambda i, t, s: s * (i @ t.T))


FROZEN = spec(
    "x: [B, 4]",
    """
    - {id: table, op: parameter, shape: [4], trainable: false}
    - {id: bias, op: buffer, shape: [4], init_value: 0.25}
    - {id: temp, op: buffer, shape: [], init_value: 2.0, persistent: false}
    - {id: lin, op: linear, in: x, out_features: 4}
    - {id: a, op: add, in: [lin, table]}
    - {id: b, op: add, in: [a, bias]}
    - {id: n, op: mul, in: [b, temp]}
    """,
)


def test_frozen_parameter_and_buffers_in_state_forward_and_gradients() -> None:
    """trainable: false is a parameter without gradient; a buffer is state, not a parameter;
    a non-persistent one stays out of the state dict (DeepSeek-V3's e_score_correction_bias
    is a persistent float32 buffer, as here)."""
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    g, gm = compile_spec(FROZEN)  # check_state: declared params and buffers are the module's
    assert g.nodes["bias"].op.param_shapes(g.nodes["bias"].args) == {}
    assert list(gm.state_dict()) == ["table.weight", "bias.value", "lin.weight", "lin.bias"]
    assert [n for n, _ in gm.named_parameters()] == ["table.weight", "lin.weight", "lin.bias"]
    assert [n for n, _ in gm.named_buffers()] == ["bias.value", "temp.value"]
    assert not gm.table.weight.requires_grad and gm.lin.weight.requires_grad
    assert_same(gm.bias.value, torch.full((4,), 0.25))
    assert_same(gm.temp.value, torch.tensor(2.0))
    router = DeepseekV3TopkRouter(DeepseekV3Config(n_routed_experts=4, hidden_size=8))
    assert "e_score_correction_bias" in router.state_dict()
    assert "e_score_correction_bias" not in dict(router.named_parameters())
    assert router.e_score_correction_bias.shape == gm.bias.value.shape
    x = torch.randn(3, 4)
    y = run(gm, x)["y"]
    want = (x @ gm.lin.weight.T + gm.lin.bias + gm.table.weight + 0.25) * 2.0
    numerics.assert_close(y, want, numerics.Tolerance(torch.float32, 4 + 4))
    y.sum().backward()
    assert gm.table.weight.grad is None and gm.lin.weight.grad is not None


def test_summary_counts_trainable_frozen_and_buffers() -> None:
    s = archcomp.summary(FROZEN)
    assert s.parameters == 4 + 16 + 4  # table, lin.weight, lin.bias
    assert s.trainable_parameters == 20 and s.non_trainable_parameters == 4
    assert s.buffers == 4 + 1  # bias and temp (persistent or not)
    assert s.grad_bytes == 20 * 4  # no gradient for the frozen table
    assert s.optimizer_bytes == 2 * 20 * 4 + 4 * 2  # AdamW: two moments and a step each
    rows = {r.name: r for r in s.rows}
    assert rows["table"].parameters == 4 and rows["bias"].parameters == 0
    assert rows["bias"].buffer_bytes == 16 and rows["temp"].buffer_bytes == 4
    scalar = archcomp.summary(CLIP_LOGITS)
    assert (
        scalar.parameters == 1 and {r.name: r.shape_json for r in scalar.rows}["logit_scale"] == []
    )


def test_artifact_round_trip_of_scalars_frozen_parameters_and_buffers(tmp_path) -> None:
    model = archcomp.build(FROZEN, seed=1)
    with torch.no_grad():
        model.bias.value.copy_(torch.arange(4.0))  # updated outside the gradient
        model.temp.value.fill_(5.0)  # not persistent: rebuilt, not saved
    archcomp.save(model, tmp_path / "m.safetensors")
    back = archcomp.load(tmp_path / "m.safetensors")
    assert back.state_dict().keys() == model.state_dict().keys()
    for k, t in model.state_dict().items():
        assert_same(back.state_dict()[k], t)
    assert_same(back.temp.value, torch.tensor(2.0))
    assert not back.table.weight.requires_grad
    clip = archcomp.build(CLIP_LOGITS, seed=0)
    with torch.no_grad():
        clip.logit_scale.weight.fill_(4.6052)  # log(100), CLIP's clamp
    archcomp.save(clip, tmp_path / "clip.safetensors")
    loaded = archcomp.load(tmp_path / "clip.safetensors").logit_scale.weight
    assert loaded.shape == () and loaded.item() == pytest.approx(4.6052)


OWN_BUFFERS = """
archcomp: 1
name: own_buffers
dims: {B: 2}
inputs:
  x: {shape: [B, 5]}
blocks:
  head:
    inputs: [x]
    nodes:
      - {id: lin, op: linear, out_features: 5}
      - {id: final_logits_bias, op: buffer, shape: [1, 5], key: self}
      - {id: n, op: add, in: [lin, final_logits_bias]}
      - {id: temp, op: buffer, shape: [], init_value: 2.0, persistent: false, key: self}
      - {id: m, op: mul, in: [n, temp]}
    outputs: m
nodes:
  - {id: layers, op: head, repeat: 2}
  - {id: bias, op: buffer, shape: [5], init_value: 0.5, key: self}
  - {id: out, op: add, in: [layers, bias]}
outputs: {y: out}
"""


def test_buffer_keyed_by_its_node_id_loads_a_bare_buffer(tmp_path) -> None:
    """BART's ``final_logits_bias``: a module's own buffer, keyed by the node id (in a block
    and at the top level); persistent ones in the state dict, loaded strictly and saved, the
    non-persistent one rebuilt from init_value; forward as a hand-written module's."""

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(5, 5)
            self.register_buffer("final_logits_bias", torch.randn(1, 5))
            self.register_buffer("temp", torch.tensor(2.0), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.lin(x) + self.final_logits_bias) * self.temp  # (B, 5)

    class Ref(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(Head() for _ in range(2))
            self.register_buffer("bias", torch.randn(5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer(x)
            return x + self.bias  # (B, 5)

    model = archcomp.build(OWN_BUFFERS, seed=0)
    g = load_graph(OWN_BUFFERS)
    assert g.nodes["bias"].op.buffer_shapes(g.nodes["bias"].args) == {"": (5,)}
    torch.manual_seed(0)
    ref = Ref()
    assert list(model.state_dict()) == list(ref.state_dict())  # bias; layers.i.lin, .final...
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert_same(model.bias, torch.full((5,), 0.5))
    assert_same(model.layers[1].final_logits_bias, torch.zeros(1, 5))
    assert_same(model.layers[0].temp, torch.tensor(2.0))
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 5)
    with RoundingChains() as chains:
        y, want = model(x), ref(x)
    numerics.assert_close(y, want, chains.tolerance(torch.float32, y, want))
    archcomp.save(model, tmp_path / "m.safetensors")
    back = archcomp.load(tmp_path / "m.safetensors")
    assert_same(back.bias, ref.bias)
    assert_same(back.layers[1].final_logits_bias, ref.layers[1].final_logits_bias)
    s = archcomp.summary(OWN_BUFFERS)
    assert s.parameters == 2 * 30 and s.buffers == 2 * (5 + 1) + 5
    assert {r.name: r.buffer_bytes for r in s.rows}.get("bias") == 20


def test_buffer_keyed_by_its_node_id_emits_standalone_source(tmp_path) -> None:
    from equivalence import check_compile_export_emit

    model = archcomp.build(OWN_BUFFERS, seed=0).eval()
    with torch.no_grad():
        model.layers[0].final_logits_bias.normal_()  # loaded from the state dict, not filled
    check_compile_export_emit(model, (torch.randn(2, 5),), tmp_path)


def test_buffer_and_scalar_errors() -> None:
    text = spec(
        "x: [B, 4]", "- {id: p, op: buffer, shape: [4], in: x}\n- {id: n, op: add, in: [x, p]}"
    )
    assert errors_of(text) == ["op 'buffer' takes no input"]
    messages = errors_of(
        spec("x: [B, 4]", "- {id: p, op: buffer, shape: [4, 0]}\n- {id: n, op: add, in: [x, p]}")
    )
    assert len(messages) == 1 and "greater than 0" in messages[0]
    fails(
        "x: [B, 4]",
        "op: parameter, shape: [], trainable: 1",
        "'trainable': expected a bool, found int 1",
        "1}",
    )
