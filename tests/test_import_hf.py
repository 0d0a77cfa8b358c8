"""`archcomp import --hf`: a transformers checkpoint folder -> a spec, built from config.json on
the meta device and traced with torch.export; its weights then load by their own keys with
`archcomp convert --spec`. Models from small random configs, every weight re-drawn
(tests/lowering.py), saved with save_pretrained; outputs and gradients to tests/NUMERICS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import Case, check_case
from hf_models import quiet
from import_checks import SMALL, logits_equal, saved

import archcomp
from archcomp.cli.main import main
from archcomp.importer import ImportFailure
from archcomp.importer.hf import import_hf

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parent.parent


def test_llama_round_trip_from_the_cli(tmp_path: Path) -> None:
    ref, folder = saved(
        tmp_path, "Llama", rope_parameters={"rope_type": "default", "rope_theta": 5e5}
    )
    spec, art = tmp_path / "llama.yaml", tmp_path / "llama.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    assert '- {id: layers, op: llama_decoder_layer, repeat: "${num_hidden_layers}",' in text
    assert (
        '- {id: self_attn, op: multi_head_attention, num_heads: "${num_attention_heads}",\n'
        '         num_kv_heads: "${num_key_value_heads}", bias: false, causal: true,\n'
        '         rope: {theta: "${rope_theta}", max_len: "${max_position_embeddings}"}, '
        "out_name: o_proj}"
    ) in text
    assert "rope_theta: 500000.0" in text.split("dims:")[0]  # the params, from the config
    assert "  llama_decoder_layer:  # (B, T, hidden_size) -> (B, T, hidden_size)\n" in text
    assert "view" not in text and "transpose" not in text  # the head split is the attention's
    logits_equal(archcomp.load(art), ref)
    shallow = archcomp.build(text, params={"num_hidden_layers": 1}, device="meta")
    assert "model.layers.1.mlp.up_proj.weight" not in shallow.state_dict()
    # gradients, on the built spec with transformers' own state_dict (no mapping)
    model = archcomp.build(text)
    model.load_state_dict(ref.state_dict(), strict=True)
    ref.train(model.training)
    ids = (torch.arange(18).view(2, 9) * 7) % SMALL["vocab_size"]
    case = Case(
        model,
        ref,
        (ids,),
        lambda x: [ref(input_ids=x).logits],
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)


def test_imported_llama_is_within_twice_the_shipped_spec() -> None:
    shipped = sum(
        len((ROOT / "archcomp" / "specs" / p).read_text().splitlines())
        for p in ("llama.yaml", "blocks/llama.yaml")
    )
    text = _imported_llama()
    assert len(text.splitlines()) <= 2 * shipped


def _imported_llama() -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        cfg = transformers.LlamaConfig(**SMALL)
        cfg.architectures = ["LlamaForCausalLM"]
        cfg.save_pretrained(d)  # config.json only: import --hf reads no weight
        return import_hf(d)


@pytest.mark.parametrize(
    ("family", "config", "shows"),
    [
        ("Mistral", {"sliding_window": 4}, 'window: "${sliding_window}"'),
        ("Qwen2", {}, "bias: {q: true, k: true, v: true, out: false}"),
        ("Qwen3", {"head_dim": 12}, 'head_dim: "${head_dim}"'),
        ("Olmo2", {}, 'qk_norm: {kind: rms, eps: "${rms_norm_eps}", per_head: false}'),
        ("StableLm", {}, "rotary_dim: 2,"),  # a quarter of each 8-dim head rotates; LayerNorm
        ("Granite", {"embedding_multiplier": 3.0}, "op: mul, scalar: 3.0"),
        ("Phi3", {}, "out_name: o_proj,\n         qkv_name: qkv_proj}"),  # sliced; gate_up chunked
    ],
)
def test_decoder_families_round_trip(
    tmp_path: Path, family: str, config: dict[str, Any], shows: str
) -> None:
    ref, folder = saved(tmp_path, family, **config)
    spec = tmp_path / "spec.yaml"
    spec.write_text(import_hf(folder))
    assert shows in spec.read_text()
    logits_equal(archcomp.from_pretrained(folder, spec), ref)


def test_gpt_neox_round_trip(tmp_path: Path) -> None:
    """query_key_value viewed per head and chunked (qkv_layout: per_head), a quarter of each
    head rotated, the parallel residual as two adds. transformers saves lm_head as
    embed_out.weight (its legacy key), so the module's own state_dict loads, strictly."""
    ref, folder = saved(tmp_path, "GPTNeoX")
    text = import_hf(folder)
    assert "out_name: dense, qkv_name: query_key_value, qkv_layout: per_head}" in text
    assert "num_kv_heads" not in text and "rotary_dim: 2," in text
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    logits_equal(model, ref)


def test_a_tied_lm_head_ties_into_the_model_block(tmp_path: Path) -> None:
    ref, folder = saved(tmp_path, "Llama", tie_word_embeddings=True)
    spec, art = tmp_path / "spec.yaml", tmp_path / "tied.safetensors"
    spec.write_text(import_hf(folder))
    assert "tie: {weight: model.embed_tokens.weight}" in spec.read_text()
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    model = archcomp.load(art)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    logits_equal(model, ref)


def test_one_layer_is_a_repeat_of_one(tmp_path: Path) -> None:
    ref, folder = saved(tmp_path, "Llama", num_hidden_layers=1)
    text = import_hf(folder)
    assert '- {id: layers, op: llama_decoder_layer, repeat: "${num_hidden_layers}",' in text
    logits_equal(archcomp.from_pretrained(folder, text), ref)


def test_layers_that_differ_become_nodes_in_order(tmp_path: Path) -> None:
    """SmolLM3's layer 3 has no RoPE (a mapping the others have: no ``index`` reads it): the
    layers are a block of nodes ``0`` .. ``3`` in order, two block kinds (ordered.py)."""
    ref, folder = saved(tmp_path, "SmolLM3", num_hidden_layers=4)
    text = import_hf(folder)
    assert "      - {id: '3', op: smol_lm3_decoder_layer_2," in text
    assert "      - {id: layers, op: layers," in text
    model = archcomp.build(text)
    model.load_state_dict(ref.state_dict(), strict=True)  # model.layers.3.self_attn...
    logits_equal(model.eval(), ref)


def test_a_changed_rotary_application_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """q scaled on top of RoPE: one more mul in the attention, refused, not dropped."""
    from transformers.models.llama import modeling_llama as ml

    plain = ml.apply_rotary_pos_emb
    monkeypatch.setattr(ml, "apply_rotary_pos_emb", lambda q, k, cos, sin: (
        plain(q, k, cos, sin)[0] * 2.0, plain(q, k, cos, sin)[1]))  # fmt: skip
    _, folder = saved(tmp_path, "Llama")
    with pytest.raises(ImportFailure, match="not RoPE's rotate-half of q and k"):
        import_hf(folder)


def test_fused_qkv_rows_feeding_other_ports_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Phi-3 with q and k swapped after the slices: the qkv rows no longer feed SDPA's q and k
    as qkv_name lays them out, so the attention is refused, not imported as Phi-3's."""
    from transformers.models.phi3 import modeling_phi3 as mp

    plain = mp.apply_rotary_pos_emb
    monkeypatch.setattr(mp, "apply_rotary_pos_emb", lambda q, k, cos, sin: plain(
        q, k, cos, sin)[::-1])  # fmt: skip
    _, folder = saved(tmp_path, "Phi3", num_key_value_heads=4)
    with pytest.raises(ImportFailure, match="qkv_proj whose rows from 0 do not feed SDPA's q"):
        import_hf(folder)


def test_unsupported_calls_are_listed_with_their_source_lines(tmp_path: Path) -> None:
    quiet()
    cfg = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=11, n_positions=8,
        activation_function="gelu_python",  # erf written out: no archcomp op for aten.erf
    )  # fmt: skip
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(ImportFailure) as e:
        import_hf(tmp_path)
    message = str(e.value)
    assert "transformer.h.0.mlp.act: aten.erf.default (no archcomp op for it) at " in message
    assert "activations.py:" in message and "return self.act(input)" in message


def _config(text: str | None) -> Any:
    return lambda d: None if text is None else (d / "config.json").write_text(text)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (_config(None), "no config.json"),
        (_config("{"), "not readable JSON"),
        (_config('{"architectures": ["os.system"]}'), "no transformers model class"),
        (_config("{}"), "no 'architectures'"),
    ],
)
def test_cli_bad_folder_exits_2(
    tmp_path: Path, setup: Any, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(tmp_path)
    assert main(["import", "--hf", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_hf_takes_no_factory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "mod:make", "--hf", str(tmp_path)]) == 2
    assert "give no FACTORY" in capsys.readouterr().err


def test_docs_hf_example_shows_what_import_writes(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "import.md").read_text().split("## Transformers checkpoints", 1)[1]
    code = doc.split('python -c "\n', 1)[1].split('"\n', 1)[0]
    shown = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    quiet()
    exec(code.replace("'tiny-llama'", repr(str(tmp_path / "tiny-llama"))), {})  # the doc's code
    assert import_hf(tmp_path / "tiny-llama") == shown


@pytest.mark.parametrize(
    ("where", "message"),
    [("missing", "no such checkpoint folder"), ("config.json", "is a file: give the checkpoint")],
)
def test_cli_hf_names_a_missing_folder_or_a_file(
    tmp_path: Path, where: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert main(["import", "--hf", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_an_input_given_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["import", "import_models:Cnn", "--input", "x=2,1,28,28", "--input", "x=2,1,28,28"]
    assert main(args) == 2
    assert "--input x: given twice" in capsys.readouterr().err
