"""archcomp.build(..., activation_checkpointing=True): each repeated block recomputed in the
backward pass, with the plain build's module tree, keys and gradients; and the summary's
checkpointed estimate models what such a build keeps."""

from __future__ import annotations

import torch
from numerics import assert_same

import archcomp
from archcomp.backends.torch.checkpointing import is_checkpointed, repeated_blocks
from archcomp.backends.torch.memory import trace_activations
from archcomp.passes.pipeline import load_graph

GPT2 = {"vocab": 64, "context": 16, "d_model": 32, "h": 4, "N": 3, "dropout": 0.1}


def _saved_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one forward (each storage once, weights not)."""
    skip = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = t.untyped_storage()._cdata
        if key not in skip and key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(ids)
    del out
    return total


def _step(ac: bool) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    m = archcomp.build("gpt2", GPT2, seed=3, activation_checkpointing=ac)
    m.train()  # dropout on: the recomputation must draw the same masks
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(11)
    m(ids).logsumexp(-1).mean().backward()
    return m, {k: p.grad for k, p in m.named_parameters()}


def test_same_keys_modules_and_gradients() -> None:
    plain, g_plain = _step(False)
    ckpt, g_ckpt = _step(True)
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    assert [n for n, _ in ckpt.named_modules()] == [n for n, _ in plain.named_modules()]
    blocks = repeated_blocks(ckpt)
    assert [p for p, _ in blocks] == ["h_.0", "h_.1", "h_.2"]
    assert all(is_checkpointed(b) for _, b in blocks)
    assert not any(is_checkpointed(b) for _, b in repeated_blocks(plain))
    assert type(blocks[0][1]).__name__ == type(repeated_blocks(plain)[0][1]).__name__
    assert g_ckpt.keys() == g_plain.keys()
    for k in g_plain:  # the same kernels on the same inputs, dropout masks included
        assert_same(g_ckpt[k], g_plain[k], k)


def test_checkpointing_keeps_only_block_inputs_as_the_summary_models() -> None:
    ids = torch.randint(0, 64, (1, 16))
    plain = archcomp.build("gpt2", {**GPT2, "dropout": 0.0}, seed=1)
    ckpt = archcomp.build("gpt2", {**GPT2, "dropout": 0.0}, seed=1, activation_checkpointing=True)
    kept_plain, kept_ckpt = _saved_bytes(plain.train(), ids), _saved_bytes(ckpt.train(), ids)
    assert kept_ckpt < kept_plain / 4
    # The estimate: what the forward keeps (block inputs and the nodes outside blocks) plus
    # one copy recomputed in the backward. The first part is exactly what the build keeps.
    g = load_graph("gpt2", {**GPT2, "dropout": 0.0})
    meta = archcomp.build("gpt2", {**GPT2, "dropout": 0.0}, device="meta")
    trace = trace_activations(meta, g, {"B": 1, "T": 16}, torch.float32)
    recompute = max(kept for _, kept in trace.copies.values())
    assert trace.checkpointed() - recompute == kept_ckpt


def test_checkpointed_forward_equals_plain() -> None:
    m = archcomp.build("gpt2", {**GPT2, "dropout": 0.0}, seed=2, activation_checkpointing=True)
    ids = torch.randint(0, 64, (1, 8))
    want = archcomp.build("gpt2", {**GPT2, "dropout": 0.0}, seed=2)(ids)
    assert_same(m(ids), want)
