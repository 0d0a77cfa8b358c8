"""The Gemma specs beyond tests/test_checkpoints.py's per-family tests: the published
parameter counts equal transformers' own model of the same config built on the meta device,
local and global layers follow config.json's ``layer_types`` whatever its pattern, and a
config the spec cannot compute is refused at its field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numerics
import pytest
import torch
from hf_models import FAMILIES, outputs, save
from numerics import RoundingChains
from spec_library import LIBRARY

import archcomp
from archcomp.cli import main

pytest.importorskip("transformers")

# transformers' configs of the published sizes (the checkpoints' config.json)
GEMMA2_9B = dict(
    vocab_size=256000,
    hidden_size=3584,
    intermediate_size=14336,
    num_hidden_layers=42,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=4096,
)
GEMMA3_4B_TEXT = dict(
    vocab_size=262208,
    hidden_size=2560,
    intermediate_size=10240,
    num_hidden_layers=34,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=1024,
    rope_scaling={"rope_type": "linear", "factor": 8.0},
)


def _meta_count(cls_name: str, config_name: str, sizes: dict[str, Any]) -> int:
    import transformers

    config = getattr(transformers, config_name)(**sizes)
    with torch.device("meta"):
        model = getattr(transformers, cls_name)(config)
    return sum(p.numel() for p in model.parameters())  # a tied head is one parameter


@pytest.mark.parametrize(
    ("name", "cls_name", "config_name", "sizes"),
    [
        ("gemma2", "Gemma2ForCausalLM", "Gemma2Config", GEMMA2_9B),
        ("gemma3_text", "Gemma3ForCausalLM", "Gemma3TextConfig", GEMMA3_4B_TEXT),
    ],
)
def test_published_count_equals_transformers_on_meta(
    name: str, cls_name: str, config_name: str, sizes: dict[str, Any]
) -> None:
    ours = archcomp.summary(name).parameters
    assert ours == LIBRARY[name][0]
    assert ours == _meta_count(cls_name, config_name, sizes)


def test_local_and_global_layers_follow_config_json(tmp_path: Path) -> None:
    """A checkpoint whose layers are not transformers' alternation (global first, then two
    local ones) loads as it is; the spec's default alternation would compute something else."""
    family = FAMILIES["gemma2"]
    kinds = ["full_attention", "sliding_attention", "sliding_attention"]
    from hf_zoo_gemma import gemma2

    torch.manual_seed(0)
    hf = gemma2(layer_types=kinds)
    hf.save_pretrained(tmp_path / "hf")
    model = archcomp.from_pretrained(tmp_path / "hf")
    assert model.spec["params"]["layer_types"] == kinds
    x = family.inputs(torch.Generator().manual_seed(1))
    with torch.no_grad(), RoundingChains() as chains:
        want, got = family.hf_call(hf, x)["logits"], outputs(model, x)["logits"]
    numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want))
    archcomp.save_pretrained(model, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["layer_types"] == kinds


def test_a_checkpoint_without_soft_caps_is_refused_at_its_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save(FAMILIES["gemma2"], tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["final_logit_softcapping"] = None  # transformers: no cap
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["convert", str(tmp_path), "-o", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "config.json:1:" in err and "final_logit_softcapping = None" in err
    assert "param 'final_softcap' must be float" in err


def _compare_loaded(hf: Any, folder: Path, grads: bool = False) -> Any:
    """archcomp.from_pretrained(folder) against ``hf``: logits, and with ``grads`` the
    embedding's gradient, by the rule of tests/numerics.py; returns the archcomp model."""
    family = FAMILIES[hf.config.model_type]
    model = archcomp.from_pretrained(folder)
    x = family.inputs(torch.Generator().manual_seed(1))
    with RoundingChains() as chains:
        want, got = family.hf_call(hf, x)["logits"], outputs(model, x)["logits"]
        numerics.assert_close(got, want, chains.tolerance(torch.float32, got, want))
        if grads:
            w = torch.randn(want.shape, generator=torch.Generator().manual_seed(2))
            (want * w).sum().backward()
            (got * w).sum().backward()
    if grads:
        theirs = hf.model.embed_tokens.weight.grad
        ours = model.get_parameter("embed_tokens.weight").grad
        numerics.assert_close(ours, theirs, chains.tolerance(torch.float32))
    return model


def test_gemma3_equals_transformers_eager_attention(tmp_path: Path) -> None:
    """The family (tests/hf_zoo_gemma.py) runs transformers' sdpa attention through
    tests/test_checkpoints.py; here its eager one, outputs and gradients."""
    from hf_zoo_gemma import gemma3_text

    torch.manual_seed(0)
    hf = gemma3_text("eager")
    hf.save_pretrained(tmp_path)
    assert hf.config._attn_implementation == "eager"
    assert FAMILIES["gemma3_text"].make().config._attn_implementation == "sdpa"
    _compare_loaded(hf, tmp_path, grads=True)


def test_gemma3_config_in_older_form(tmp_path: Path) -> None:
    """A config.json as transformers 4.50 wrote Gemma 3 1B's: no layer_types (transformers'
    rule: every sliding_window_pattern-th layer global), the two RoPE bases as rope_theta and
    rope_local_base_freq and no scaling. It loads as transformers reads it, and exports back to
    the same model."""
    from hf_zoo_gemma import gemma3_text
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(0)
    gemma3_text().save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf" / "config.json"
    config = json.loads(path.read_text())
    del config["layer_types"]
    del config["rope_parameters"]
    config |= {"rope_theta": 1000.0, "rope_local_base_freq": 100.0, "rope_scaling": None}
    path.write_text(json.dumps(config))
    hf = Gemma3ForCausalLM.from_pretrained(tmp_path / "hf").eval()
    model = _compare_loaded(hf, tmp_path / "hf")
    params = model.spec["params"]
    assert params["layer_types"] == ["sliding_attention"] * 2 + ["full_attention"] * 1 + [
        "sliding_attention"
    ]
    assert (params["rope_factor"], params["rope_theta"], params["local_theta"]) == (1, 1000, 100)
    archcomp.save_pretrained(model, tmp_path / "out")
    again = Gemma3ForCausalLM.from_pretrained(tmp_path / "out").eval()
    _compare_loaded(again, tmp_path / "hf")


def test_qk_norm_offset_is_for_rms_norms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "m.yaml"
    spec.write_text(
        "archcomp: 1\nname: m\ninputs: {x: [B, T, 32]}\nnodes:\n"
        "  - {id: attn, op: multi_head_attention, num_heads: 4,\n"
        "     qk_norm: {kind: layer, offset: 1}}\noutputs: attn\n"
    )
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "m.yaml:6:15: error" in err
    assert "qk_norm's offset is the gain offset of an RMS norm" in err


def test_gemma2_config_in_older_form(tmp_path: Path) -> None:
    """Gemma 2's config.json as the hub has it: no layer_types (transformers alternates from a
    local layer) and rope_theta at the top; it loads as transformers reads it."""
    from transformers import Gemma2ForCausalLM

    save(FAMILIES["gemma2"], tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["layer_types"], config["rope_parameters"]
    config["rope_theta"] = 100.0  # not the default, so that a default in its place is seen
    (tmp_path / "config.json").write_text(json.dumps(config))
    hf = Gemma2ForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    model = _compare_loaded(hf, tmp_path)
    assert model.spec["params"]["rope_theta"] == 100.0
