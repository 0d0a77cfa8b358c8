"""archcomp.nn.fast_linear: the same module and weights as nn.Linear, from the same RNG."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archcomp.nn.fast_linear import new_linear

CPU = torch.device("cpu")


def _same(a: nn.Module, b: nn.Module) -> None:
    assert type(a) is type(b) and repr(a) == repr(b)
    assert list(vars(a)) == list(vars(b))
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].requires_grad == sb[k].requires_grad
        assert torch.equal(sa[k], sb[k]), k  # bit for bit: the same draws in the same order
    assert [type(p) for p in a.parameters()] == [type(p) for p in b.parameters()]


@pytest.mark.parametrize("shape", [(4, 4, True), (7, 3, False), (1, 9, True), (33, 5, True)])
@pytest.mark.parametrize("dtype", [None, torch.float64, torch.bfloat16])
def test_same_module_weights_and_rng_state(shape: tuple[int, int, bool], dtype: object) -> None:
    fin, fout, bias = shape
    torch.manual_seed(3)
    ref = nn.Linear(fin, fout, bias=bias, device=CPU, dtype=dtype)  # type: ignore[arg-type]
    after_ref = torch.rand(4)
    torch.manual_seed(3)
    fast = new_linear(fin, fout, bias, CPU, dtype)  # type: ignore[arg-type]
    _same(ref, fast)
    assert torch.equal(torch.rand(4), after_ref)  # the RNG left where torch leaves it


def test_torch_path_when_a_registration_hook_is_set() -> None:
    seen: list[str] = []
    handle = nn.modules.module.register_module_parameter_registration_hook(
        lambda m, name, p: seen.append(name)
    )
    try:
        new_linear(4, 2, True, CPU, None)
    finally:
        handle.remove()
    assert seen == ["weight", "bias"]


def test_meta_device_is_torch_s() -> None:
    m = new_linear(4, 2, False, torch.device("meta"), None)
    assert m.weight.is_meta and m.bias is None and m.in_features == 4


def test_a_replaced_initializer_is_called() -> None:
    """A user's wrapper of torch's initializer (functools.wraps and all) still runs."""
    import functools

    from torch.nn import init

    from archcomp.backends.torch.init import meta_init_skipped

    calls: list[tuple[int, ...]] = []
    original = init.kaiming_uniform_

    @functools.wraps(original)
    def logged(t: torch.Tensor, *a: object, **k: object) -> torch.Tensor:
        calls.append(tuple(t.shape))
        return original(t, *a, **k)  # type: ignore[arg-type]

    init.kaiming_uniform_ = logged
    try:
        new_linear(3, 2, True, CPU, None)
    finally:
        init.kaiming_uniform_ = original
    assert calls == [(2, 3)]
    with meta_init_skipped():  # archcomp's own pass-through: the fast path, same weights
        torch.manual_seed(5)
        fast = new_linear(3, 2, True, CPU, None)
    torch.manual_seed(5)
    _same(nn.Linear(3, 2, device=CPU), fast)
