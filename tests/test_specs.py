"""The spec library: every spec checks, has its published parameter count, runs forward with
the declared output shapes, and trains (the loss falls over a few steps on a fixed batch)."""

from __future__ import annotations

import pytest
import torch
from spec_library import LIBRARY, SIZES, SPECS, example_inputs

import archcomp
from archcomp.cli import main
from archcomp.ir import Graph
from archcomp.ir.dims import substitute


def test_every_spec_is_in_the_library() -> None:
    assert {p.stem for p in SPECS.glob("*.yaml")} == set(LIBRARY)


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_check_passes(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(SPECS / f"{name}.yaml")]) == 0
    assert f"ok: {name}:" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_parameter_count(name: str) -> None:
    assert archcomp.summary(SPECS / f"{name}.yaml").parameters == LIBRARY[name][0]


def test_transformer_big_is_within_5_percent_of_table_3() -> None:
    big = {"d_model": 1024, "d_ff": 4096, "h": 16}
    count = archcomp.summary(SPECS / "transformer.yaml", big).parameters
    assert abs(count - 213e6) / 213e6 < 0.05
    base = archcomp.summary(SPECS / "transformer.yaml").parameters
    assert abs(base - 65e6) / 65e6 < 0.05


def _run(name: str) -> tuple[torch.nn.Module, Graph, dict[str, torch.Tensor]]:
    params = LIBRARY[name][1]
    g = archcomp.check(SPECS / f"{name}.yaml", params)
    model = archcomp.build(SPECS / f"{name}.yaml", params=params, seed=0)
    return model, g, example_inputs(g, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_forward_gives_the_declared_shapes(name: str) -> None:
    model, g, inputs = _run(name)
    out = model(**inputs)
    outs = out if isinstance(out, dict) else {next(iter(g.outputs)): out}
    assert set(outs) == set(g.outputs)
    for oname, t in g.output_types.items():
        assert t is not None
        assert list(outs[oname].shape) == [int(substitute(d, SIZES)) for d in t.shape]  # type: ignore[call-overload]
        assert torch.isfinite(outs[oname]).all()


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_trains(name: str) -> None:
    """20 Adam steps on one fixed batch: the loss falls. The targets come from a second model of
    the same spec with other weights (a teacher), so they are reachable for every spec."""
    torch.manual_seed(0)
    model, _, inputs = _run(name)
    teacher = archcomp.build(SPECS / f"{name}.yaml", params=LIBRARY[name][1], seed=1).eval()
    with torch.no_grad():
        out = teacher(**inputs)
    targets = out if isinstance(out, dict) else {"y": out}
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        out = model(**inputs)
        outs = out if isinstance(out, dict) else {"y": out}
        loss = sum(torch.nn.functional.mse_loss(outs[k], targets[k]) for k in outs)
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
