"""``archcomp generate``: a random Llama checkpoint with a word-level tokenizer trained here,
offline, by the ``tokenizers`` library; text on stdout, tokens per second on stderr."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hf_models import FAMILIES, save

import archcomp
from archcomp.cli import main

tokenizers = pytest.importorskip("tokenizers")

WORDS = "the cat sat on a mat and the dog ran to the park while a bird sang in the tree"


def train_tokenizer(path: Path, vocab: int = 61) -> None:
    """A word-level tokenizer of at most ``vocab`` ids, trained on a sentence, saved as
    tokenizer.json (what a checkpoint folder ships)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab, special_tokens=["[UNK]"])
    tok.train_from_iterator([WORDS] * 3, trainer)
    tok.save(str(path))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama")
    save(FAMILIES["llama"], folder)
    train_tokenizer(folder / "tokenizer.json")
    return folder


def test_generate_streams_text_and_reports_speed(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["generate", str(checkpoint), "--prompt", "the cat sat", "--max-new-tokens", "6"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("the cat sat ")
    assert "tokens/s" in err and "prompt 3" in err
    # the text is the model's own greedy continuation
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    model = archcomp.from_pretrained(checkpoint)
    ids = torch.tensor([tok.encode("the cat sat").ids])
    new = model.generate(ids, 6, eos_token_id=0)[0, 3:].tolist()
    assert new and out == tok.decode(ids[0].tolist() + new) + "\n"


def test_sampling_with_a_seed_prints_the_same_text_twice(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", str(checkpoint), "--prompt", "a dog", "--max-new-tokens", "5"]
    argv += ["--temperature", "0.9", "--top-k", "10", "--top-p", "0.95", "--seed", "3"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first


def test_a_missing_tokenizer_is_a_usage_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((checkpoint / name).read_bytes())
    assert main(["generate", str(bare), "--prompt", "the cat"]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.json: no such tokenizer file" in err and "Traceback" not in err


def test_a_prompt_past_the_position_table_is_a_usage_error(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", str(checkpoint), "--prompt", "the cat", "--max-new-tokens", "40"]
    assert main(argv) == 2
    assert "exceeds the model's position table" in capsys.readouterr().err


def test_bad_sampling_values_are_usage_errors(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", str(checkpoint), "--prompt", "x", "--top-p", "1.5"]) == 2
    assert "--top-p must be in (0, 1]" in capsys.readouterr().err


def test_summary_shows_the_kv_cache_per_layer_and_in_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["summary", "llama", "--kv-cache", "--context", "8192", "--dtype", "bfloat16"]
    assert main([*argv, "--json"]) == 0
    kv = json.loads(capsys.readouterr().out)["kv_cache"]
    # Llama 3 8B: 32 layers x (k, v) x 8 KV heads x 128 dims x 2 bytes = 128 KiB a token
    assert kv["bytes"] == 8192 * 128 * 1024 and len(kv["layers"]) == 32
    assert kv["layers"][0]["keys"] == [1, 8, 8192, 128]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "KV cache (bfloat16, batch 1, context 8,192)" in out and "1.0 GiB" in out


def test_summary_shows_mamba_conv_and_scan_state(capsys: pytest.CaptureFixture[str]) -> None:
    """Mamba-130m keeps per layer 3 inputs of 1536 channels and a (1536, 16) float32 state,
    whatever the context."""
    argv = ["summary", "mamba", "--kv-cache", "--context", "100000", "--json"]
    assert main(argv) == 0
    kv = json.loads(capsys.readouterr().out)["kv_cache"]
    assert kv["layers"][0] == {
        "layer": "layers.0.mixer.conv1d", "tensors": {"conv": [1, 1536, 3]}, "bytes": 1536 * 3 * 4
    }  # fmt: skip
    assert kv["layers"][1]["tensors"] == {"ssm": [1, 1536, 16]}
    assert kv["bytes"] == 24 * 1536 * (3 + 16) * 4 and len(kv["layers"]) == 48
    assert main(argv[:-1]) == 0
    out = capsys.readouterr().out
    assert re.search(r"layers\.0\.mixer\.ssm +ssm \(1, 1536, 16\) +96\.0 KiB", out)


def test_summary_shows_sliding_window_layers_keeping_their_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Mistral 7B (window 4096) at 32,768 tokens: 32 rings of 4096 positions, an eighth of the
    whole length's keys and values; Gemma 2's global layers keep the whole context."""
    argv = ["summary", "mistral", "--kv-cache", "--context", "32768", "--dtype", "bfloat16"]
    assert main([*argv, "--json"]) == 0
    kv = json.loads(capsys.readouterr().out)["kv_cache"]
    assert kv["layers"][0]["keys"] == [1, 8, 4096, 128]
    assert kv["bytes"] == 32 * 2 * 8 * 4096 * 128 * 2
    argv = ["summary", "gemma2", "--kv-cache", "--context", "8192", "--json"]
    assert main(argv) == 0
    layers = json.loads(capsys.readouterr().out)["kv_cache"]["layers"]
    assert [row["keys"][2] for row in layers[:2]] == [4096, 8192]  # local, global


def test_summary_shows_the_latent_of_latent_attention(capsys: pytest.CaptureFixture[str]) -> None:
    """DeepSeek-V3 caches 512 + 64 numbers a token and layer, not 128 heads x (192 + 128)."""
    argv = ["summary", "deepseek_v3", "--kv-cache", "--context", "4096", "--dtype", "bfloat16"]
    assert main([*argv, "--json"]) == 0
    kv = json.loads(capsys.readouterr().out)["kv_cache"]
    assert kv["layers"][0]["tensors"] == {"latent": [1, 4096, 512], "rope_key": [1, 4096, 64]}
    assert kv["bytes"] == 61 * 4096 * (512 + 64) * 2 and "keys" not in kv["layers"][0]
    assert main(argv) == 0
    assert "latent (1, 4096, 512), rope_key (1, 4096, 64)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "message"),
    [("bert_base", "one input"), ("mlp", "no causal self-attention")],
)
def test_summary_kv_cache_of_a_model_without_one_is_a_usage_error(
    spec: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["summary", spec, "--kv-cache", "--context", "16"]) == 2
    assert message in capsys.readouterr().err


def test_an_encoder_decoder_writes_its_output_for_the_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """T5 (and BART) read the prompt as the source and write the decoder's text, from
    config.json's decoder_start_token_id; Whisper, whose source is audio, is refused."""
    from hf_zoo_encdec import make
    from tokenizers import Tokenizer

    hf = make("t5")
    hf.config.decoder_start_token_id = 0  # as the hub's T5 configs have it
    hf.save_pretrained(tmp_path)
    train_tokenizer(tmp_path / "tokenizer.json")
    code = main(["generate", str(tmp_path), "--prompt", "the cat sat", "--max-new-tokens", "5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "tokens/s" in err
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    model = archcomp.from_pretrained(tmp_path)
    src = torch.tensor([tok.encode("the cat sat").ids])
    new = model.generate(input_ids=src, max_new_tokens=5, eos_token_id=1)[0, 1:].tolist()
    assert out == tok.decode(new) + "\n"
    whisper = tmp_path / "whisper"
    make("whisper").save_pretrained(whisper)
    train_tokenizer(whisper / "tokenizer.json")
    assert main(["generate", str(whisper), "--prompt", "the cat"]) == 2
    err = capsys.readouterr().err
    assert "needs an encoder of token ids" in err and "Traceback" not in err
