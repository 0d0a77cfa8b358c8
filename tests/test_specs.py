"""The spec library: every spec checks, has its published parameter count, runs forward with
the declared output shapes, and trains (the loss falls over a few steps on a fixed batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import archcomp
from archcomp.cli import main
from archcomp.ir import Graph
from archcomp.ir.dims import substitute

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# name -> (exact parameter count at the spec's defaults, small overrides for the runtime tests)
LIBRARY: dict[str, tuple[int, dict[str, Any]]] = {
    "mlp": (67, {}),
    "linear_regression": (2, {}),
    "lenet5": (61_706, {}),
    "cnn": (545_098, {}),
    "lstm_classifier": (1_234, {}),
    "rnn": (322, {}),
    "transformer": (
        63_082_496,
        {"N": 1, "d_model": 32, "d_ff": 64, "h": 4, "vocab": 50, "dropout": 0.0},
    ),
    "bert_base": (
        110_106_428,
        {
            "N": 2,
            "d_model": 32,
            "d_ff": 64,
            "h": 4,
            "vocab": 50,
            "max_positions": 16,
            "dropout": 0.0,
        },
    ),
    "gpt2": (
        124_439_808,
        {"N": 2, "d_model": 32, "h": 4, "vocab": 50, "context": 16, "dropout": 0.0},
    ),
    "gpt3": (
        174_604_259_328,
        {"N": 2, "d_model": 32, "h": 4, "vocab": 50, "context": 16, "dropout": 0.0},
    ),
    "resnet18": (11_689_512, {"width": 8, "classes": 10, "image": 32}),
    "resnet50": (25_557_032, {"width": 4, "classes": 10, "image": 32}),
    "llama": (
        8_030_261_248,
        {"N": 2, "d_model": 64, "h": 4, "n_kv_heads": 2, "d_ff": 128, "vocab": 50, "context": 16},
    ),
    "mistral": (
        7_241_732_096,
        {
            "N": 2,
            "d_model": 64,
            "h": 4,
            "n_kv_heads": 2,
            "d_ff": 128,
            "vocab": 50,
            "context": 16,
            "window": 4,
        },
    ),
    "vit_b16": (
        86_567_656,
        {"image_size": 32, "patch": 8, "d_model": 32, "h": 4, "N": 2, "d_ff": 64, "classes": 10},
    ),
}
SIZES = {"B": 3, "S": 8, "T": 6}


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


def example_inputs(g: Graph, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random inputs of the graph's declared shapes: ids below every consuming embedding's size."""
    out: dict[str, torch.Tensor] = {}
    for name, info in g.inputs.items():
        shape = [int(substitute(d, SIZES)) for d in info.type.shape]  # type: ignore[call-overload]
        if info.type.dtype == "int64":
            limits = [
                n.args.num_embeddings
                for n in g.nodes.values()
                if n.op.name == "embedding" and any(r.node == name for r in n.refs())
            ]
            out[name] = torch.randint(0, min(limits), shape, generator=gen)
        elif info.type.dtype == "bool":
            out[name] = torch.zeros(shape, dtype=torch.bool)
            out[name][..., -1] = True  # pad the last position
        else:
            out[name] = torch.randn(shape, generator=gen)
    return out


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
