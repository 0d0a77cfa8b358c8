"""Checkpoints of experts: the mapping transform ``stack`` (every expert's tensor -> one
stacked tensor, and back on export), on transformers' Mixtral in both its layouts (each
expert on its own, as save_pretrained writes it; stacked, as transformers holds it), with
eager attention as well as sdpa, and the errors of a stack that cannot be made; DeepSeek-V3
with eager attention and with YaRN RoPE (its softmax scale derived from rope_parameters),
through from_pretrained and back through export."""

from __future__ import annotations

import json
from pathlib import Path

import numerics
import pytest
import torch
from hf_models import FAMILIES, outputs, quiet
from hf_zoo_moe import _deepseek_v3, _mixtral
from numerics import RoundingChains
from safetensors import safe_open
from safetensors.torch import save_file

import archcomp
from archcomp import SpecError
from archcomp.checkpoints.transforms import Stack, Unstack

pytest.importorskip("transformers")

PER_EXPERT = "model.layers.{i}.block_sparse_moe.experts.{e}.w{w}.weight"


def _equal_logits(hf: torch.nn.Module, model: torch.nn.Module, name: str = "mixtral") -> None:
    family = FAMILIES[name]
    x = family.inputs(torch.Generator().manual_seed(1))
    with torch.no_grad(), RoundingChains() as chains:
        want = family.hf_call(hf, x)["logits"]
        got = outputs(model, x)["logits"]
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want), msg="logits")


def _equal_grads(hf: torch.nn.Module, model: torch.nn.Module, name: str, keys: list[str]) -> None:
    """The gradients of the same weighted sum of both models' logits, at transformers' keys
    ``keys`` (``model.`` dropped on archcomp's side; ``mlp.`` -> ``dense_mlp.`` where the
    dense layer's MLP is meant): through the router's choice, the experts and attention."""
    family = FAMILIES[name]
    x = family.inputs(torch.Generator().manual_seed(1))
    with RoundingChains() as chains:
        want = family.hf_call(hf, x)["logits"]
        got = outputs(model, x)["logits"]
        w = torch.randn(want.shape, generator=torch.Generator().manual_seed(2))
        (want * w).sum().backward()
        (got * w).sum().backward()
    theirs, ours = dict(hf.named_parameters()), dict(model.named_parameters())
    for key in keys:
        mine = key.removeprefix("model.").replace("0.mlp.", "0.dense_mlp.")
        expected, actual = theirs[key].grad, ours[mine].grad
        assert expected is not None and actual is not None, key
        scale = numerics.rms(expected)
        numerics.assert_close(
            actual, expected, chains.tolerance(torch.float32), floor=scale, msg=key
        )


def _keys(folder: Path) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_per_expert_mixtral_checkpoint_loads_equal(attn: str, tmp_path: Path) -> None:
    """save_pretrained stores each expert on its own (w1 gate, w3 up, w2 down): the mapping
    stacks them into the spec's gate_up_proj and down_proj."""
    quiet()
    hf = _mixtral(attn)
    hf.save_pretrained(tmp_path)
    keys = _keys(tmp_path)
    assert PER_EXPERT.format(i=1, e=3, w=3) in keys
    assert not any("gate_up_proj" in k for k in keys)
    model = archcomp.from_pretrained(tmp_path)
    _equal_logits(hf, model)
    stacked = hf.state_dict()["model.layers.1.mlp.experts.gate_up_proj"]
    assert torch.equal(model.state_dict()["layers.1.mlp.experts.gate_up_proj"], stacked)
    layer = "model.layers.1."
    keys = [f"{layer}mlp.experts.gate_up_proj", f"{layer}mlp.experts.down_proj"]
    keys += [f"{layer}mlp.gate.weight", f"{layer}self_attn.q_proj.weight"]
    _equal_grads(hf, model.train(), "mixtral", keys)


def test_stacked_mixtral_checkpoint_loads_equal_and_exports_per_expert(tmp_path: Path) -> None:
    """A checkpoint holding transformers' stacked tensors as they are (gate_up_proj (E, 2F,
    d), down_proj, mlp.gate) loads to the same model; export writes the per-expert layout,
    which transformers reads back."""
    quiet()
    hf = _mixtral()
    hf.save_pretrained(tmp_path / "saved")
    stacked = tmp_path / "stacked"
    stacked.mkdir()
    (stacked / "config.json").write_text((tmp_path / "saved" / "config.json").read_text())
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    save_file(state, str(stacked / "model.safetensors"))
    assert "model.layers.0.mlp.experts.gate_up_proj" in _keys(stacked)
    model = archcomp.from_pretrained(stacked)
    _equal_logits(hf, model)
    old = archcomp.from_pretrained(tmp_path / "saved")
    for key, t in old.state_dict().items():
        assert torch.equal(model.state_dict()[key], t), key
    archcomp.save_pretrained(model, tmp_path / "out")
    assert _keys(tmp_path / "out") == _keys(tmp_path / "saved")
    back = type(hf).from_pretrained(tmp_path / "out").eval()
    _equal_logits(back, model)


def _drop_key(folder: Path, key: str) -> None:
    path = folder / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != key}  # noqa: SIM118
    save_file(tensors, str(path))


def test_a_missing_expert_is_named(tmp_path: Path) -> None:
    quiet()
    _mixtral().save_pretrained(tmp_path)
    _drop_key(tmp_path, PER_EXPERT.format(i=0, e=1, w=3))
    with pytest.raises(SpecError) as exc:
        archcomp.from_pretrained(tmp_path)
    text = str(exc.value)
    assert (
        "stack over {e}" in text and "lacks 'model.layers.0.block_sparse_moe.experts.1.w3" in text
    )


def test_an_expert_index_far_past_the_others_is_refused_at_once(tmp_path: Path) -> None:
    """A hostile index (10**17) does not make the stack list 10**17 missing experts."""
    quiet()
    _mixtral().save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    far = PER_EXPERT.format(i=0, e=10**17, w=2)
    tensors[far] = tensors.pop(PER_EXPERT.format(i=0, e=3, w=2))
    save_file(tensors, str(path))
    with pytest.raises(SpecError) as exc:
        archcomp.from_pretrained(tmp_path)
    text = str(exc.value)
    assert "lacks 'model.layers.0.block_sparse_moe.experts.3.w2.weight'" in text, text
    assert "and more" in text


def test_too_few_experts_is_a_shape_mismatch(tmp_path: Path) -> None:
    """The last expert missing from every kind: the stacks hold 3 experts, the spec 4."""
    quiet()
    _mixtral().save_pretrained(tmp_path)
    for i in range(2):
        for w in (1, 2, 3):
            _drop_key(tmp_path, PER_EXPERT.format(i=i, e=3, w=w))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_local_experts"] == 4
    with pytest.raises(
        SpecError,
        match=r"gives \[3, 96, 32\] after stack, concat, but model tensor .* is \[4, 96, 32\]",
    ):
        archcomp.from_pretrained(tmp_path)


MAPPING = """archcomp_mapping: 1
spec: mixtral
checkpoint: {{model_type: mixtral, architecture: MixtralForCausalLM}}
tensors:
  a.{{i}}.experts.{{e}}.w.weight: {rule}
"""


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('{to: "l.{i}.w", transforms: [{stack: f}]}', "stack over '{f}'"),
        ('{to: "l.{i}.{e}.w", transforms: [{stack: e}]}', "stack over '{e}'"),
        ('{to: "l.{i}.w", transforms: [transpose, {stack: e}]}', "stack is the first"),
        ('{to: "l.{i}.w", transforms: [stack]}', "'stack' needs arguments"),
        ('{to: "l.{i}.w", transforms: [{stack: [e]}]}', "stack takes the placeholder"),
    ],
)
def test_stack_rules_that_cannot_work_are_located(rule: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING.format(rule=rule))
    from archcomp.checkpoints.mapping import load_mapping

    with pytest.raises(SpecError, match=r"m\.yaml:5:") as exc:
        load_mapping(path)
    assert message in str(exc.value)


def test_stack_and_unstack_are_inverse_views_of_parts() -> None:
    """Two parts of three indices each: part-major order in, one stacked tensor per part."""
    parts = [torch.full((2, 5), float(i)) for i in range(6)]
    stacked = Stack(2).apply(parts)
    assert [tuple(t.shape) for t in stacked] == [(3, 2, 5), (3, 2, 5)]
    assert Stack(2).shapes([(2, 5)] * 6) == [(3, 2, 5), (3, 2, 5)]
    assert stacked[1][0, 0, 0] == 3.0
    back = Unstack(2).apply(stacked)
    assert all(torch.equal(a, b) for a, b in zip(back, parts, strict=True))
    assert Unstack(2).shapes([(3, 2, 5), (3, 2, 5)]) == [(2, 5)] * 6


YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
YARN |= {"original_max_position_embeddings": 16, "mscale": 1.0, "mscale_all_dim": 0.8}


# without mscale (transformers' None): cos and sin times m(4, 1), whatever mscale_all_dim
YARN_NO_MSCALE = {k: v for k, v in YARN.items() if k != "mscale"}
# YaRN's ramp over the 3 frequencies of the 6-dim RoPE head from dim 1 to 3 (beta_fast 0.1,
# beta_slow 0.001 rotations at 16 positions), not 0 to 1 (32 and 1), and a factor of 8
YARN_RAMP = {**YARN, "factor": 8.0, "beta_fast": 0.1, "beta_slow": 0.001}


@pytest.mark.parametrize(
    ("attn", "rope"),
    [("eager", None), ("sdpa", YARN), ("sdpa", YARN_NO_MSCALE), ("sdpa", YARN_RAMP)],
    ids=["eager", "sdpa-yarn", "sdpa-yarn-no-mscale", "sdpa-yarn-ramp"],
)
def test_deepseek_v3_loads_and_exports_equal(
    attn: str, rope: dict[str, object] | None, tmp_path: Path
) -> None:
    """Logits of 9 positions; with YaRN past its original 16 too (40), which the tables and
    the softmax scale (m(factor, 0.8)^2 over the default) both change. Export writes
    rope_parameters back as transformers saved them (YaRN's factor, original context, ramp,
    mscale and mscale_all_dim; no mscale where none was given; none of them for the default
    RoPE), and transformers' model of the exported folder equals the original at 40
    positions too."""
    quiet()
    kw = {} if rope is None else {"rope_parameters": rope}
    hf = _deepseek_v3(attn, **kw)
    hf.save_pretrained(tmp_path / "hf")
    model = archcomp.from_pretrained(tmp_path / "hf")
    _equal_logits(hf, model, "deepseek_v3")
    if rope is not None:
        assert model.spec["params"]["rope_factor"] == rope["factor"]
        _logits_at_40(hf, model)
    keys = ["model.layers.0.mlp.gate_proj.weight", "model.layers.2.mlp.experts.gate_up_proj"]
    keys += ["model.layers.2.mlp.shared_experts.down_proj.weight", "model.layers.2.mlp.gate.weight"]
    keys += [
        "model.layers.1.self_attn.kv_b_proj.weight",
        "model.layers.1.self_attn.q_a_proj.weight",
    ]
    _equal_grads(hf, model.train(), "deepseek_v3", keys)
    archcomp.save_pretrained(model, tmp_path / "out")
    assert _keys(tmp_path / "out") == _keys(tmp_path / "hf")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["rope_parameters"] == saved["rope_parameters"]
    assert config["rope_parameters"]["rope_type"] == ("default" if rope is None else "yarn")
    back = type(hf).from_pretrained(tmp_path / "out").eval()
    _equal_logits(back, model, "deepseek_v3")
    if rope is not None:
        _logits_at_40(back, model)
    for key in ("beta_fast", "beta_slow"):  # each of the ramp's ends changes the logits
        if rope is not None and key in rope:
            other = _deepseek_v3(attn, rope_parameters={k: v for k, v in rope.items() if k != key})
            _logits_differ(other, model)


def _logits_differ(hf: torch.nn.Module, model: torch.nn.Module) -> None:
    ids = torch.randint(0, 50, (2, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - model(ids).logits).abs().max() > 1e-3


def _logits_at_40(hf: torch.nn.Module, model: torch.nn.Module) -> None:
    ids = torch.randint(0, 50, (2, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), RoundingChains() as chains:
        want = hf(input_ids=ids).logits
        got = model(ids).logits
    tol = chains.tolerance(torch.float32, got, want)
    numerics.assert_close(got, want, tol, msg="logits at 40 positions")


def test_deepseek_v3_hub_config_with_the_older_rope_scaling(tmp_path: Path) -> None:
    """DeepSeek-V3's config.json on the hub writes YaRN as the older rope_scaling (type yarn,
    factor 40 of 4096, mscale and mscale_all_dim 1.0) beside a top-level rope_theta: it loads
    with no spec or mapping and equals transformers (which reads it as rope_parameters), at
    40 positions (past the original 16) and in its gradients; an attention_factor, which the
    spec does not carry, is refused."""
    quiet()
    rope = {**YARN, "mscale_all_dim": 1.0}
    hf = _deepseek_v3("sdpa", rope_parameters=dict(rope))
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_theta"] = config.pop("rope_parameters")["rope_theta"]
    config["rope_scaling"] = {k: v for k, v in rope.items() if k not in ("rope_type", "rope_theta")}
    config["rope_scaling"] |= {"type": "yarn", "beta_fast": 32, "beta_slow": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert type(hf).from_pretrained(tmp_path).config.rope_parameters["factor"] == 4.0
    model = archcomp.from_pretrained(tmp_path)
    params = model.spec["params"]
    assert (params["rope_factor"], params["original_context"]) == (4.0, 16)
    assert (params["mscale"], params["mscale_all_dim"]) == (1.0, 1.0)
    _logits_at_40(hf, model)
    keys = ["model.layers.1.self_attn.kv_a_proj_with_mqa.weight", "model.embed_tokens.weight"]
    _equal_grads(hf, model.train(), "deepseek_v3", keys)
    config["rope_scaling"]["attention_factor"] = 1.5
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SpecError, match="attention_factor"):
        archcomp.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_factor": 4.0, "original_context": 16, "mscale": 1.0, "mscale_all_dim": 1.0},
        {"rope_factor": 8.0, "original_context": 16, "beta_fast": 0.1, "beta_slow": 0.001},
        {"rope_factor": 1.0, "original_context": 16, "mscale": 1.0},  # read by no RoPE
    ],
    ids=["yarn", "yarn-ramp-no-mscale", "default"],
)
def test_deepseek_v3_built_from_the_spec_exports_its_rope(
    rope: dict[str, float], tmp_path: Path
) -> None:
    """A model built from the spec (no config.json behind it) exports its RoPE: YaRN's fields
    in rope_parameters, those at the value an absent one reads as left out (beta_fast 32,
    beta_slow 1, mscale 0), the default RoPE's as its params; transformers' model of the
    folder equals it at 40 positions, past the original 16."""
    from hf_zoo_moe import DEEPSEEK_V3_PARAMS

    quiet()
    params = {**DEEPSEEK_V3_PARAMS, **rope}
    model = archcomp.build("deepseek_v3", params=params, seed=3).eval()
    archcomp.save_pretrained(model, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())["rope_parameters"]
    yarn = rope["rope_factor"] != 1
    assert written["rope_type"] == ("yarn" if yarn else "default")
    assert ("factor" in written, "beta_fast" in written) == (yarn, "beta_fast" in rope)
    assert ("mscale" in written) == ("mscale" in rope)
    loaded = archcomp.from_pretrained(tmp_path)
    assert loaded.spec["params"] == params
    ids = torch.randint(0, 50, (2, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        numerics.assert_same(loaded(ids).logits, model(ids))  # built models return tensors
    from transformers import DeepseekV3ForCausalLM

    _logits_at_40(DeepseekV3ForCausalLM.from_pretrained(tmp_path).eval(), loaded)
