"""`archcomp import --hf` of transformers' MambaForCausalLM: its MambaMixer (the torch path, no
CUDA kernels) recognised as a whole into the shipped spec's ``mamba_mixer`` nodes, A_log and D
as ``parameter`` nodes fed to ``selective_scan``, the LM head tied to the embedding; a small
random config with every weight re-drawn (A_log, D and dt_proj's bias too), saved with
save_pretrained, round-trips from the command line: logits and every gradient equal to
transformers' (tests/NUMERICS.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from equivalence import Case, check_case
from hf_models import quiet
from lowering import redraw
from numerics import RoundingChains, assert_close

import archcomp
from archcomp.cli.main import main

transformers = pytest.importorskip("transformers")
VOCAB = 50


def _mamba(tmp_path: Path, **extra: Any) -> tuple[Any, Path]:
    """A tiny re-drawn MambaForCausalLM (2 layers, 16 wide, 4 states) and its saved folder."""
    quiet()
    config = transformers.MambaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        state_size=4,
        num_hidden_layers=2,
        expand=2,
        conv_kernel=3,
        time_step_rank=3,
        **extra,
    )
    model = transformers.MambaForCausalLM(config)
    redraw(model, 7)
    folder = tmp_path / "mamba"
    model.save_pretrained(folder)
    return model.eval(), folder


def test_mamba_round_trip_from_the_cli(tmp_path: Path) -> None:
    ref, folder = _mamba(tmp_path)
    spec, art = tmp_path / "mamba.yaml", tmp_path / "mamba.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    assert "- {id: A_log, op: parameter, shape: [32, 4], key: self}" in text
    assert "in: {x: act, delta: delta, B: B, C: C, z: xz.out1, A_log: A_log, D: D}" in text
    assert "tie: {weight: backbone.embeddings.weight}" in text
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, VOCAB, (2, 11), generator=gen)
    with torch.no_grad(), RoundingChains() as chains:
        got, want = archcomp.load(art).eval()(input_ids=ids), ref(input_ids=ids).logits
    got = got["logits"] if isinstance(got, dict) else got
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
    # gradients, on the built spec with transformers' own state_dict (no mapping)
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    case = Case(
        model,
        ref,
        (ids,),
        lambda x: [ref(input_ids=x, use_cache=False).logits],
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)
