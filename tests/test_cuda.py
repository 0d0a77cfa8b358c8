"""On a CUDA GPU: a build on ``cuda`` in bfloat16 runs forward and backward, under
torch.compile too, and equals the float32 build within the numerics rule. Skipped (with the
reason) where there is no CUDA; nothing here has run on a GPU yet (docs/scaling.md)."""

from __future__ import annotations

import pytest
import torch
from numerics import RoundingChains, assert_close

import archcomp

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason=f"no CUDA GPU (torch {torch.__version__}, built with CUDA {torch.version.cuda})",
)

GPT2 = {"vocab": 128, "context": 32, "d_model": 64, "h": 4, "N": 2, "dropout": 0.0}


def _ids() -> torch.Tensor:
    return torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(0)).cuda()


def test_bf16_build_on_cuda_forward_backward() -> None:
    model = archcomp.build("gpt2", GPT2, device="cuda", dtype="bf16", seed=0)
    assert all(p.device.type == "cuda" and p.dtype == torch.bfloat16 for p in model.parameters())
    ref = archcomp.build("gpt2", GPT2, device="cuda", seed=0)  # float32, same weights
    model.load_state_dict({k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()})
    with RoundingChains() as chains:
        want = ref(_ids())
    got = model(_ids())  # (2, 32, vocab)
    assert_close(got.float(), want, chains.tolerance(torch.bfloat16, want))
    got.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_torch_compile_on_cuda_matches_eager() -> None:
    model = archcomp.build("gpt2", GPT2, device="cuda", dtype="bf16", seed=0)
    compiled = torch.compile(model)
    with RoundingChains() as chains:
        want = model(_ids())
    got = compiled(_ids())
    assert_close(got.float(), want.float(), chains.tolerance(torch.bfloat16, want))
    compiled(_ids()).float().mean().backward()
    assert model.wte.weight.grad is not None
