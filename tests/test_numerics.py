"""The tolerance rule of numerics.py: K as counted, the comparison, and the bugs it catches.

The planted bugs are the ones a compiler or a reference typically gets wrong; each is put into
one side of an equivalence case of test_compiler_equivalence.py, and the same rule that passes
the unchanged case must fail it (tests/NUMERICS.md lists the measured errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numerics
import pytest
import torch
import torch.nn.functional as F
from equivalence import (
    LAYER_NORM_SPEC,
    Case,
    check_case,
    compare_case,
    layer_norm_case,
    transformer_case,
    transformer_spec,
)
from numerics import RoundingChains, Tolerance
from torch import nn

F32 = torch.float32
EPS = torch.finfo(F32).eps

# -- K: the longest chain of roundings ---------------------------------------------------------


def chain(fn: Callable[[], torch.Tensor]) -> int:
    with RoundingChains() as chains:
        out = fn()
    return chains.of(out)


def test_a_matmul_adds_its_inner_dimension_and_views_add_nothing() -> None:
    x, w = torch.randn(3, 64), torch.randn(64, 5)
    assert chain(lambda: x @ w) == 64
    assert chain(lambda: (x @ w).t().reshape(-1)) == 64
    assert chain(lambda: F.linear(x, w.t(), torch.zeros(5))) == 65  # addmm: 64 products + bias


def test_chains_add_along_the_path_and_take_the_longer_branch() -> None:
    x, w1, w2 = torch.randn(3, 64), torch.randn(64, 32), torch.randn(32, 5)
    assert chain(lambda: torch.relu(x @ w1) @ w2) == 64 + 32  # relu rounds nothing
    assert chain(lambda: (x @ w1) * 2 + 1) == 64 + 2  # each elementwise op rounds once
    short = x[:, :32]
    assert chain(lambda: (x @ w1) + (short @ w1[:32])) == 64 + 1


def test_norms_softmax_attention_and_sums_count_what_they_reduce() -> None:
    x = torch.randn(4, 7, 32)
    assert chain(lambda: F.layer_norm(x, (32,))) == 32 + 4
    assert chain(lambda: x.softmax(-1)) == 32 + 2
    assert chain(lambda: x.sum(dim=(0, 1))) == 4 * 7
    q, k = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 9, 8)
    # scores sum 8, softmax and weights @ V sum 9 each; the count includes the backward's sums
    assert chain(lambda: F.scaled_dot_product_attention(q, k, k)) == 8 + 3 * 9 + 5


def test_a_weight_gradient_chain_runs_forward_back_and_sums_the_batch() -> None:
    lin = nn.Linear(8, 4)
    x = torch.randn(16, 8)
    with RoundingChains() as chains:
        out = lin(x)
        k_out = chains.of(out)
        out.square().sum().backward()
    assert k_out == 8 + 1
    assert lin.weight.grad is not None
    # forward 9, square 1, sum 64, backward: mul 2, grad_w = grad_out^T @ x sums 16 rows
    assert chains.longest >= k_out + 1 + 64 + 16


def test_a_fused_fast_path_counts_what_its_unfused_ops_count() -> None:
    """nn.TransformerEncoderLayer runs one fused op in inference, a dozen ops in training."""
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    x = torch.randn(2, 7, 32)
    with RoundingChains() as unfused:
        slow = layer(x)
    layer.eval()
    with torch.no_grad(), RoundingChains() as fused:
        fast = layer(x)
    assert fused.longest_ops == 1 and unfused.longest_ops > 5  # the fast path did run
    assert abs(fused.of(fast) - unfused.of(slow)) <= 0.05 * unfused.of(slow)


def test_a_write_into_a_view_reaches_its_base() -> None:
    x, w = torch.randn(4, 8), torch.randn(8, 8)
    with RoundingChains() as chains:
        out = torch.zeros(4, 16)
        out[:, :8] = x @ w
    assert chains.of(out) == 8


def test_counting_changes_no_result() -> None:
    case = transformer_case()
    plain = case.ref_forward(*case.inputs)[0]
    with RoundingChains():
        counted = case.ref_forward(*case.inputs)[0]
    assert torch.equal(plain, counted)


# -- The comparison ----------------------------------------------------------------------------


def test_numerics_md_states_the_constant_in_use() -> None:
    doc = (Path(__file__).parent / "NUMERICS.md").read_text()
    assert f"    C = {numerics.C:g}\n" in doc


def test_tolerance_is_c_eps_sqrt_k() -> None:
    tol = Tolerance(F32, 400)
    assert tol.value == pytest.approx(numerics.C * EPS * 20)
    assert Tolerance(torch.float64, 400).value == pytest.approx(numerics.C * 2.0**-52 * 20)
    assert "sqrt(K=400)" in str(tol)


def test_a_reordered_sum_passes_and_a_real_difference_fails() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4096)
    tol = Tolerance(F32, 4096)
    forward = x.sum(1)
    backward = x.flip(1).cumsum(1)[:, -1]  # same sums, another order, sequentially
    assert not torch.equal(forward, backward)
    err = numerics.assert_close(backward, forward, tol)
    assert err < tol.value / 4
    with pytest.raises(AssertionError, match="over tolerance"):
        numerics.assert_close(forward * (1 + 10 * tol.value), forward, tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_pays_for_output_roundings_not_float32_sums(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x, w = torch.randn(64, 4096).to(dtype), torch.randn(4096, 32).to(dtype)
    with RoundingChains() as chains:
        got = x @ w
    tol = chains.tolerance(dtype, got)
    assert (tol.k, tol.ops) == (4096, 1)
    own = torch.finfo(dtype).eps
    assert tol.value < 2 * numerics.C * own  # eps(dtype) * sqrt(4096) would allow 100% error
    exact = x.double() @ w.double()
    err = numerics.assert_close(got.double(), exact, tol)
    assert err < tol.value / 4
    with pytest.raises(AssertionError, match="over tolerance"):
        numerics.assert_close((got * (1 + 8 * own)).double(), exact, tol)


def test_non_finite_values_and_integers_must_match_exactly() -> None:
    tol = Tolerance(F32, 1)
    a = torch.tensor([1.0, -math.inf, 2.0])
    numerics.assert_close(a.clone(), a, tol)
    with pytest.raises(AssertionError, match="inf/nan at other positions"):
        numerics.assert_close(torch.tensor([1.0, 0.0, 2.0]), a, tol)
    with pytest.raises(AssertionError, match="values differ"):
        numerics.assert_close(torch.tensor([1, 2]), torch.tensor([1, 3]), tol)


def test_a_floor_measures_a_cancelled_sum_against_its_terms() -> None:
    noise = torch.full((4,), 1e-6)
    with pytest.raises(AssertionError):
        numerics.assert_close(noise, torch.zeros(4) + 1e-7, Tolerance(F32, 100))
    numerics.assert_close(noise, torch.zeros(4) + 1e-7, Tolerance(F32, 100), floor=10.0)


# -- Planted bugs: the rule that passes the true case fails each --------------------------------


def _gelu_tanh() -> Case:
    """The compiled feed-forward uses GELU's tanh approximation; the reference the exact one."""
    return transformer_case(transformer_spec("op: gelu, approximate: tanh"), "gelu")


def _missing_residual() -> Case:
    """The reference's last decoder layer drops the residual around its feed-forward."""
    case = transformer_case()
    layer = case.ref.transformer.decoder.layers[-1]  # type: ignore[union-attr, index]
    ff = layer._ff_block
    layer._ff_block = lambda x: ff(x) - x  # norm3(x + ff(x) - x) = norm3(ff(x))
    return case


def _attention_scale() -> Case:
    """The compiled first decoder self-attention scales scores by 1/d_head, not 1/sqrt(d_head)."""
    case = transformer_case()
    attn = case.model.get_submodule("decoder.0.self_attn")
    d_head = attn.q_proj.weight.size(0) // 4
    with torch.no_grad():
        attn.q_proj.weight /= math.sqrt(d_head)
        attn.q_proj.bias /= math.sqrt(d_head)
    return case


def _no_causal_mask() -> Case:
    """The compiled decoder's self-attention forgets the causal mask."""
    spec = transformer_spec().replace("causal: true", "causal: false")
    return transformer_case(spec)


def _padding_ignored() -> Case:
    """The reference attends to padded source tokens."""
    case = transformer_case()
    forward = case.ref_forward
    case.ref_forward = lambda src, tgt, pad: forward(src, tgt, torch.zeros_like(pad))
    return case


def _layer_norm_eps() -> Case:
    """The compiled layer norm adds 1e-6 to the variance; the reference (torch's default) 1e-5."""
    return layer_norm_case(LAYER_NORM_SPEC.replace("eps: 1.0e-5", "eps: 1.0e-6"))


PLANTED: dict[str, Callable[[], Case]] = {
    "gelu_tanh_for_exact": _gelu_tanh,
    "missing_residual": _missing_residual,
    "attention_scale_1/d": _attention_scale,
    "no_causal_mask": _no_causal_mask,
    "padding_ignored": _padding_ignored,
    "layer_norm_eps_1e-6": _layer_norm_eps,
}


@pytest.mark.parametrize("bug", list(PLANTED))
def test_the_rule_catches_a_planted_bug(bug: str, torch_threads: int) -> None:
    case = PLANTED[bug]()
    worst = max(compare_case(PLANTED[bug]()), key=lambda c: c.ratio)
    # Not by a hair: the bug's error is well above the tolerance, which is itself several times
    # the rounding error measured for the true cases (NUMERICS.md).
    assert worst.ratio > 3, f"{bug}: {worst.name} error {worst.error:.2e} within {worst.tol}"
    with pytest.raises(AssertionError, match="over"):
        check_case(case)
