"""A build on meta skips torch.nn's default initialisation (it fills nothing there); on a real
device the defaults still run, and torch.nn.init is left as it was found."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import archcomp  # noqa: E402
from archcomp.backends.torch.init import meta_init_skipped  # noqa: E402

MLP = "specs/mlp.yaml"


def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the tensors torch.nn.init.kaiming_uniform_ (nn.Linear's default) really fills."""
    filled: list[str] = []
    real: Callable[..., Any] = nn.init.kaiming_uniform_

    def kaiming_uniform_(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        filled.append(tensor.device.type)
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(nn.init, "kaiming_uniform_", kaiming_uniform_)
    return filled


def test_meta_build_runs_no_default_init(monkeypatch: pytest.MonkeyPatch) -> None:
    filled = counting(monkeypatch)
    model = archcomp.build(MLP, device="meta")
    assert filled == []
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in archcomp.build(MLP, seed=0).parameters()
    )


def test_real_build_keeps_torch_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    filled = counting(monkeypatch)
    model = archcomp.build(MLP, seed=0)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and filled == ["cpu"] * len(linears)
    # and the values are torch's: a fresh seeded build draws the same weights
    again = archcomp.build(MLP, seed=0)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_only_meta_tensors_pass_through() -> None:
    cpu = torch.zeros(8, 8)
    meta = torch.empty(8, 8, device="meta")
    with meta_init_skipped():
        assert nn.init.normal_(meta) is meta
        nn.init.normal_(cpu, generator=torch.Generator().manual_seed(0))
    expected = torch.empty(8, 8).normal_(generator=torch.Generator().manual_seed(0))
    assert torch.equal(cpu, expected)  # a real tensor is filled exactly as without the context


def test_torch_init_is_restored_after_nested_and_concurrent_use() -> None:
    before = {name: getattr(nn.init, name) for name in ("normal_", "kaiming_uniform_")}
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with meta_init_skipped():
            entered.set()
            release.wait(30)

    t = threading.Thread(target=other)
    t.start()
    assert entered.wait(30)
    with meta_init_skipped(), meta_init_skipped():
        assert nn.init.normal_ is not before["normal_"]
    assert nn.init.normal_ is not before["normal_"]  # the other thread still holds it
    release.set()
    t.join(30)
    assert {name: getattr(nn.init, name) for name in before} == before


def test_a_patch_made_meanwhile_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    def mine(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        return tensor

    with meta_init_skipped():
        monkeypatch.setattr(nn.init, "ones_", mine)
    assert nn.init.ones_ is mine
