"""The compiler: generated code, names, ties and sharing, init, seeds, devices and dtypes."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numerics
import pytest
import torch
from numerics import RoundingChains, Tolerance, assert_same
from torch import nn

import archcomp
from archcomp.base.errors import SpecError, UsageError

ROOT = Path(__file__).resolve().parent.parent
MLP = ROOT / "specs" / "mlp.yaml"
SMALL_TRANSFORMER = {"N": 2, "d_model": 32, "d_ff": 64, "h": 4, "vocab": 50}

TWO_OUTPUTS = """\
archcomp: 1
name: two_heads
inputs:
  x: [B, 8]
nodes:
  - {id: trunk, op: linear, out_features: 4}
  - {id: a, op: linear, in: trunk, out_features: 3}
  - {id: b, op: linear, in: trunk, out_features: 2}
outputs: {first: a, second: b}
"""


def _weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_forward_is_straight_line_code_with_shape_comments() -> None:
    model = archcomp.build(MLP, seed=0)
    code = model.code
    assert "def forward(self, x):" in code
    assert "fc1 = self.fc1(x)" in code and "# (B, 5)" in code
    assert "fc2 = self.fc2(act)" in code and code.rstrip().endswith("return fc2")
    for word in ("for ", "while ", "if "):
        assert word not in code
    assert model.spec["name"] == "mlp"
    assert model.node_meta["fc1"]["outputs"]["out"]["shape"] == ["B", 5]
    assert model.node_meta["fc1"]["params"] == {"weight": [5, 10], "bias": [5]}


def test_inputs_positional_or_by_name_and_outputs_tensor_or_dict() -> None:
    model = archcomp.build(MLP, seed=0)
    x = torch.randn(3, 10)
    assert isinstance(model(x), torch.Tensor)
    assert_same(model(x=x), model(x))
    two = archcomp.build(TWO_OUTPUTS, seed=0)
    out = two(torch.randn(5, 8))
    assert isinstance(out, dict) and list(out) == ["first", "second"]
    assert out["first"].shape == (5, 3) and out["second"].shape == (5, 2)


def test_input_named_like_a_builtin_keeps_its_name() -> None:
    spec = (
        "archcomp: 1\nname: m\ninputs: {input: [2, 3]}\n"
        "nodes:\n  - {id: fc, op: linear, out_features: 2}\noutputs: fc\n"
    )
    model = archcomp.build(spec, seed=0)
    x = torch.randn(2, 3)
    assert_same(model(input=x), model(x))


def test_submodules_follow_spec_names_repeats_are_indexed() -> None:
    model = archcomp.build(ROOT / "specs" / "transformer.yaml", SMALL_TRANSFORMER, device="meta")
    names = dict(model.named_modules())
    assert "encoder.layers.0.self_attn.q_proj" in names
    assert "decoder.layers.1.cross_attn.out_proj" in names
    assert isinstance(model.encoder.layers, nn.ModuleList) and len(model.encoder.layers) == 2
    # tied: the two embeddings and the projection are one Parameter
    assert model.tgt_embed.weight is model.src_embed.weight is model.generator.weight
    keys = model.state_dict().keys()
    assert {"src_embed.weight", "tgt_embed.weight", "generator.weight"} <= set(keys)
    counted = sum(p.numel() for p in model.parameters())
    assert (
        counted
        == archcomp.summary(ROOT / "specs" / "transformer.yaml", SMALL_TRANSFORMER).parameters
    )


def test_shared_repeat_calls_one_module() -> None:
    spec = """\
archcomp: 1
name: shared
inputs: {x: [B, 4]}
nodes:
  - {id: step, op: linear, out_features: 4, repeat: 3, shared: true}
outputs: step
"""
    model = archcomp.build(spec, seed=0)
    assert len(list(model.parameters())) == 2
    assert model.code.count("self.step[0]") + model.code.count('getattr(self.step, "0")') == 3
    x = torch.randn(2, 4)
    lin = model.get_submodule("step.0")
    assert_same(model(x), lin(lin(lin(x))))


def test_same_seed_bit_identical_other_seed_differs_global_rng_untouched() -> None:
    state = torch.random.get_rng_state()
    a = archcomp.build(ROOT / "specs" / "transformer.yaml", SMALL_TRANSFORMER, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = archcomp.build(ROOT / "specs" / "transformer.yaml", SMALL_TRANSFORMER, seed=7)
    c = archcomp.build(ROOT / "specs" / "transformer.yaml", SMALL_TRANSFORMER, seed=8)
    assert _weights_equal(a, b)
    assert not torch.equal(a.src_embed.weight, c.src_embed.weight)


def test_default_init_is_torch_nn_default() -> None:
    model = archcomp.build(MLP, seed=0)
    bound = 1 / 10**0.5  # kaiming_uniform(a=sqrt(5)) on fan_in 10 gives U(-1/sqrt(10), ..)
    w = model.fc1.weight
    assert w.abs().max() <= bound and w.std() > bound / 4


INIT_SPEC = """\
archcomp: 1
name: inits
inputs: {x: [B, 64]}
nodes:
  - {id: a, op: linear, out_features: 256, init: {weight: xavier_uniform, bias: zeros}}
  - {id: b, op: linear, out_features: 256,
     init: {weight: {normal: {std: 0.02}}, bias: {constant: {value: 0.5}}}}
  - {id: c, op: linear, out_features: 8, init: orthogonal}
  - {id: n, op: layer_norm, init: {weight: {uniform: {a: 2.0, b: 3.0}}}}
outputs: n
"""


def test_named_initializers() -> None:
    model = archcomp.build(INIT_SPEC, seed=3)
    bound = (6 / (64 + 256)) ** 0.5
    assert model.a.weight.abs().max() <= bound and model.a.weight.abs().max() > bound * 0.9
    assert torch.count_nonzero(model.a.bias) == 0
    assert abs(model.b.weight.std().item() - 0.02) < 0.002
    assert torch.all(model.b.bias == 0.5)
    w = model.c.weight  # (8, 256): orthonormal rows
    # orthonormal up to QR's rounding and the product's, each summing 256 terms
    numerics.assert_close(w @ w.T, torch.eye(8), Tolerance(torch.float32, 2 * 256))
    assert model.n.weight.min() >= 2 and model.n.weight.max() <= 3
    again = archcomp.build(INIT_SPEC, seed=3)
    assert _weights_equal(model, again)


@pytest.mark.parametrize("layout", ["interleaved", "concat"])
def test_sinusoidal_initializer_is_the_fixed_table(spec_file, layout: str) -> None:
    """A [positions, d] parameter filled with the sinusoids the positional op computes
    (Whisper's encoder positions, layout concat, are stored as such a frozen table)."""
    from archcomp.nn.positional import sinusoid_table

    path = spec_file(
        "archcomp: 1\nname: m\ninputs: {x: [6, 8]}\nnodes:\n"
        "  - {id: pos, op: parameter, shape: [6, 8], "
        f"trainable: false, init: {{weight: {{sinusoidal: {{layout: {layout}}}}}}}}}\n"
        "  - {id: y, op: add, in: [x, pos]}\noutputs: y\n"
    )
    model = archcomp.build(path, seed=0)
    assert torch.equal(model.pos.weight, sinusoid_table(6, 8, layout=layout))
    assert not model.pos.weight.requires_grad


@pytest.mark.parametrize(
    ("init", "message"),
    [
        ("{weight: xavier_unifrom}", "unknown initializer 'xavier_unifrom'"),
        ("{wieght: zeros}", "op 'linear' has no parameter 'wieght'"),
        ("{bias: xavier_uniform}", "xavier_uniform needs a parameter with at least 2 dims"),
        ("{weight: {normal: {sd: 1.0}}}", "normal has no argument 'sd'"),
        ("{weight: {sinusoidal: {layout: spiral}}}", "layout must be interleaved or concat"),
        ("{bias: sinusoidal}", "sinusoidal needs a parameter with at least 2 dims"),
    ],
)
def test_bad_init_is_a_located_spec_error(spec_file, init: str, message: str) -> None:
    path = spec_file(
        f"archcomp: 1\nname: m\ninputs: {{x: [B, 4]}}\nnodes:\n"
        f"  - {{id: fc, op: linear, out_features: 2, init: {init}}}\noutputs: fc\n"
    )
    with pytest.raises(SpecError) as err:
        archcomp.build(path)
    text = str(err.value)
    assert message in text
    assert f"{path}:5:" in text  # file:line of the node
    if "unifrom" in init:
        assert "did you mean 'xavier_uniform'?" in text


def test_dtype_and_meta_device() -> None:
    model = archcomp.build(MLP, dtype="bf16", seed=0)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    meta = archcomp.build(ROOT / "specs" / "transformer.yaml", SMALL_TRANSFORMER, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())


def test_gpt3_builds_on_meta_with_exact_parameter_count() -> None:
    model = archcomp.build(ROOT / "specs" / "gpt3.yaml", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 174_604_259_328


def test_unknown_or_unavailable_device_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        archcomp.build(MLP, device="gpu0")
    with pytest.raises(UsageError, match="unknown dtype"):
        archcomp.build(MLP, dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="'cuda:0' is not available"):
            archcomp.build(MLP, device="cuda:0")
    if not (torch.backends.mps.is_available()):
        with pytest.raises(UsageError, match="'mps' is not available"):
            archcomp.build(MLP, device="mps")
    assert archcomp.build(MLP, device="auto").fc1.weight.device.type in ("cpu", "cuda", "mps")


def test_memory_estimate_refuses_oversized_builds() -> None:
    with pytest.raises(UsageError) as err:
        archcomp.build(ROOT / "specs" / "gpt3.yaml", max_memory="1GB")
    text = str(err.value)
    assert "174,604,259,328 parameters" in text and "--device meta" in text
    assert "650.5 GiB" in text  # 174.6e9 * 4 bytes, before any allocation
    with pytest.raises(UsageError, match="--device meta"):
        archcomp.build(ROOT / "specs" / "gpt3.yaml")  # no machine has 650 GiB free


def test_state_dict_round_trip_to_train_eval_and_deepcopy() -> None:
    a = archcomp.build(ROOT / "specs" / "transformer.yaml", SMALL_TRANSFORMER, seed=1)
    b = archcomp.build(ROOT / "specs" / "transformer.yaml", SMALL_TRANSFORMER, seed=2)
    b.load_state_dict(a.state_dict())
    assert _weights_equal(a, b)
    src, tgt = torch.randint(0, 50, (2, 6)), torch.randint(0, 50, (2, 4))
    a.eval(), b.eval()
    assert_same(a(src, tgt), b(src, tgt))
    a.train()
    assert a.src_drop.training
    torch.manual_seed(0)
    out1 = a(src, tgt)
    torch.manual_seed(1)
    assert not torch.equal(out1, a(src, tgt))  # dropout active in train mode
    c = copy.deepcopy(a.eval())
    assert c.spec == a.spec and c.node_meta == a.node_meta
    assert isinstance(c.encoder.layers, nn.ModuleList)
    assert c.tgt_embed.weight is c.src_embed.weight
    assert_same(c(src, tgt), a(src, tgt))
    d = a.to(torch.float64)
    assert d.src_embed.weight.dtype == torch.float64
    assert d.tgt_embed.weight is d.src_embed.weight


def test_onnx_export(tmp_path: Path) -> None:
    import onnx

    model = archcomp.build(MLP, seed=0).eval()
    path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation chatter
        torch.onnx.export(model, (torch.randn(2, 10),), str(path), dynamo=True)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["x"]


def test_docs_example_runs(monkeypatch) -> None:
    text = (ROOT / "docs" / "compiler.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/compiler.md", "exec"), namespace)  # our own docs, not a spec
    model = namespace["model"]
    assert isinstance(model, nn.Module)
    expected = [ln.removeprefix("# ") for ln in block.splitlines() if ln.startswith("#     ")]
    for line in expected:
        assert line.strip() in model.code


def test_generated_code_reads_like_hand_written() -> None:
    """Subscripts as written, public torch names, no selections of unused results."""
    code = archcomp.build(ROOT / "specs" / "lstm_classifier.yaml").code
    assert "last = lstm_output[:, -1]" in code
    assert "slice(" not in code and "h_n" not in code and "c_n" not in code
    lenet = archcomp.build(ROOT / "specs" / "lenet5.yaml").code
    assert "torch.nn.functional.avg_pool2d(" in lenet and "torch._C" not in lenet


def test_block_call_init_is_a_default_for_the_nodes_inside() -> None:
    """init on a block call reaches every op inside where it fits; a node's own init wins."""
    spec = """
archcomp: 1
name: t
inputs: {x: [B, 4]}
blocks:
  ff:
    inputs: [x]
    nodes:
      - {id: a, op: linear, out_features: 8}
      - {id: n, op: layer_norm}
      - {id: b, op: linear, out_features: 4, init: {weight: ones}}
    outputs: b
nodes:
  - {id: f, op: ff, repeat: 2, init: {weight: zeros, bias: {constant: {value: 0.5}}}}
outputs: f
"""
    model = archcomp.build(spec, seed=0)
    state = model.state_dict()
    for k in range(2):
        assert torch.count_nonzero(state[f"f.{k}.a.weight"]) == 0
        assert torch.all(state[f"f.{k}.a.bias"] == 0.5)
        assert torch.all(state[f"f.{k}.n.weight"] == 0)  # a vector: zeros fits it
        assert torch.all(state[f"f.{k}.b.weight"] == 1)  # the node's own init wins
        assert torch.all(state[f"f.{k}.b.bias"] == 0.5)


def test_ports_bind_by_name_whatever_order_the_spec_writes() -> None:
    spec = """
archcomp: 1
name: t
inputs: {x: [S, B, 8], h: [1, B, 8]}
nodes:
  - {id: g, op: gru, in: {h0: h, x: x}, hidden_size: 8, batch_first: false}
outputs: {y: g.output}
"""
    model = archcomp.build(spec, seed=0)
    assert "self.g(x, h)" in model.code
    x, h = torch.randn(5, 2, 8), torch.randn(1, 2, 8)
    expected, _ = model.g(x, h)
    assert_same(model(x, h), expected)
    assert model(x, h).shape == (5, 2, 8)


def test_compiled_model_accepts_new_sequence_lengths() -> None:
    """torch.compile(fullgraph=True) recompiles with dynamic shapes on a new length."""
    small = {"vocab": 50, "context": 16, "d_model": 32, "h": 4, "N": 1, "dropout": 0.0}
    model = archcomp.build(ROOT / "specs" / "gpt2.yaml", params=small, seed=0).eval()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for length in (5, 7, 9):
        ids = torch.randint(0, 50, (2, length))
        with RoundingChains() as chains:
            eager = model(ids)
        numerics.assert_close(compiled(ids), eager, chains.tolerance(eager.dtype, eager))


def test_inputs_cannot_shadow_names_the_forward_uses() -> None:
    import torch.fx.graph as fx_graph

    from archcomp.frontend.schema import FORWARD_GLOBALS

    assert set(fx_graph._custom_builtins) <= FORWARD_GLOBALS
    spec = "archcomp: 1\nname: n\ninputs: {torch: [B, 4]}\nnodes: [{id: t, op: tanh}]\noutputs: t\n"
    with pytest.raises(archcomp.SpecError, match="'torch' is a reserved name"):
        archcomp.check(spec)


def test_seeded_cpu_build_seeds_only_the_cpu_generator(monkeypatch) -> None:
    seeded: list[str] = []
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda *a: seeded.append("cuda"))
    monkeypatch.setattr(torch, "manual_seed", lambda *a: seeded.append("all"))
    archcomp.build(ROOT / "specs" / "mlp.yaml", seed=0)
    assert seeded == []
