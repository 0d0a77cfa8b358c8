"""The shipped mamba spec against transformers' MambaForCausalLM: a small random config, every
weight re-drawn and copied by name (transformers' ``backbone.`` prefix dropped; the mixer's
A_log and D sit on its scan node, ``mixer.ssm``), logits and the gradient of every weight.

Tolerances follow tests/NUMERICS.md: ``RoundingChains`` counts both sides' chains, through two
layers of conv, scan (one step per position in transformers' loop) and projections.
"""

from __future__ import annotations

from pathlib import Path

import numerics
import pytest
import torch
from equivalence import check_compile_export_emit
from numerics import RoundingChains
from torch import nn

import archcomp
from archcomp.nn.scan import SelectiveScan

SMALL = {"vocab": 50, "d_model": 16, "N": 2, "d_state": 4, "d_conv": 4, "expand": 2, "dt_rank": 3}


def our_name(hf: str) -> str:
    """A MambaForCausalLM weight's name in the compiled spec."""
    name = hf.removeprefix("backbone.")
    for leaf in ("A_log", "D"):
        if name.endswith(f".mixer.{leaf}"):
            return name.removesuffix(leaf) + f"ssm.{leaf}"
    return name


def redrawn(name: str, p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random values of a well-conditioned model (activations of unit scale): weights with
    variance 1 / fan_in, norm gains near 1, decays spread over (0, 1) by A_log."""
    noise = torch.randn(p.shape, generator=g)
    if name.endswith("A_log"):
        return noise * 0.7
    if "norm" in name:
        return 1 + 0.2 * noise
    if p.dim() >= 2 and "embeddings" not in name:
        return noise / p[0].numel() ** 0.5
    return noise * 0.5


def _transformers_mamba() -> nn.Module:
    from transformers import MambaConfig, MambaForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    cfg = MambaConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        state_size=4,
        conv_kernel=4,
        expand=2,
        time_step_rank=3,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        use_mambapy=False,
        use_associative_scan=False,
        residual_in_fp32=False,
    )  # fmt: skip (residual_in_fp32 is a no-op in float32 and would round a float64 run)
    model = MambaForCausalLM(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # every weight re-drawn (the tied one once)
            p.copy_(redrawn(name, p, g))
    return model


@pytest.mark.parametrize("algorithm", ["sequential", "chunked"])
def test_mamba_spec_equals_transformers_mamba_for_causal_lm(algorithm: str) -> None:
    ref = _transformers_mamba()
    ours = archcomp.build("mamba", params=SMALL, seed=0)
    for m in ours.modules():  # both lowerings of the scan, through the whole model
        if isinstance(m, SelectiveScan):
            m.algorithm = algorithm
    state = {our_name(k): v for k, v in ref.state_dict().items()}
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state)
    ids = torch.randint(0, 50, (2, 13), generator=torch.Generator().manual_seed(1))
    theirs = dict(ref.named_parameters())
    mine = dict(ours.named_parameters())
    with RoundingChains() as chains:
        got = ours(ids)
        want = ref(input_ids=ids).logits
        tol = chains.tolerance(torch.float32, got, want)
        w = torch.randn(got.shape, generator=torch.Generator().manual_seed(2))
        grads = torch.autograd.grad((got * w).sum(), [mine[our_name(k)] for k in theirs])
        expected = torch.autograd.grad((want * w).sum(), list(theirs.values()))
    numerics.assert_close(got, want, tol, msg="logits")
    scale = numerics.rms(torch.cat([e.flatten() for e in expected]))
    for name, a, e in zip(theirs, grads, expected, strict=True):
        numerics.assert_close(a, e, chains.tolerance(torch.float32), floor=scale, msg=name)


def test_mamba_compiles_exports_and_emits_standalone_python(tmp_path: Path) -> None:
    model = archcomp.build("mamba", params={**SMALL, "N": 1}, seed=0)
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(3))
    check_compile_export_emit(model, (ids,), tmp_path)
