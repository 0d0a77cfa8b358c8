"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

# Threads that wait for work sleep rather than spin (set before torch's OpenMP starts): on a
# busy machine a spinning thread takes the core its partner needs (issue 29).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch
from hypothesis import settings

# CI runs the property and fuzz suites with a fixed budget and fixed examples, so a red CI is
# reproducible; local runs draw new examples each time and keep exploring.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


@pytest.fixture
def spec_file(tmp_path: Path):
    """Write a spec text to a file and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    return write


MANY_THREADS = max(2, os.cpu_count() or 2)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the whole run (default: 1); tests that take the "
        "torch_threads fixture still run with 1 and with all cores",
    )


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread unless --torch-threads says otherwise: the suite's tensors are tiny,
    and on a busy machine threads wait for each other (three training steps of the small
    resnet50 took 0.3 s on one thread, 4.7 s on two, with the two cores shared by ~10
    processes). What must hold on every thread count takes the torch_threads fixture."""
    torch.set_num_threads(config.getoption("--torch-threads") or 1)


@pytest.fixture(params=[1, MANY_THREADS], ids=["1-thread", "many-threads"])
def torch_threads(request: pytest.FixtureRequest):
    """Run the test with torch on one intra-op thread, then on every core (at least 2).

    Equivalence tests take it: a tolerance must hold whichever kernels and split of a
    reduction the thread count makes torch and MKL pick (tests/NUMERICS.md).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        torch.set_num_threads(before)
