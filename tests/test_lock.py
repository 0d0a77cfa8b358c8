"""The lock is current: it pins every package installed here, and the metadata declares ranges.

requirements/lock.txt (written by scripts/lock.sh) is what scripts/setup.sh installs with as
constraints; pyproject.toml declares the ranges archcomp supports, so it installs next to a
user's own torch.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"


def _requirements(path: Path) -> list[Requirement]:
    """The requirement lines of a pip requirements file (comments and blank lines dropped)."""
    lines = (line.split(" #", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def _pins() -> dict[str, Requirement]:
    """The lock's pins that apply to this interpreter and platform, by canonical name."""
    pins: dict[str, Requirement] = {}
    for req in _requirements(LOCK):
        if req.marker is None or req.marker.evaluate():
            name = canonicalize_name(req.name)
            assert name not in pins, f"{req.name} is pinned twice for this platform"
            pins[name] = req
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return reqs + [Requirement(r) for r in project["optional-dependencies"]["dev"]]


def test_metadata_declares_ranges_not_pins() -> None:
    for req in _declared():
        assert not any(s.operator in ("==", "===") for s in req.specifier), (
            f"pyproject.toml pins {req}: declare a range; requirements/lock.txt holds the pins"
        )
    torch = next(r for r in _declared() if r.name == "torch")
    assert torch.specifier.contains("2.13.0") and not torch.specifier.contains("2.14.0")


def test_lock_pins_every_declared_requirement_within_its_range() -> None:
    pins = _pins()
    wanted = _declared() + _requirements(ROOT / "requirements" / "lock.in")
    for req in wanted:
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} is not in the lock: run scripts/lock.sh"
        (spec,) = pin.specifier
        assert spec.operator == "==", f"the lock does not pin {pin}"
        assert req.specifier.contains(spec.version, prereleases=True), (
            f"the lock's {pin} is outside pyproject's {req}: run scripts/lock.sh"
        )
    assert str(pins["torch"].specifier) == "==2.13.0"


def test_every_installed_package_is_the_locked_version() -> None:
    """What scripts/setup.sh installed is exactly what the lock pins: nothing unlocked crept in."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("runs in the repository's .venv, the environment scripts/setup.sh installs")
    pins = _pins()
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name == "archcomp":
            continue
        pin = pins.get(name)
        assert pin is not None, (
            f"{name} {dist.version} is installed but not locked: add it to pyproject.toml or "
            "requirements/lock.in and run scripts/lock.sh, or recreate .venv (rm -r .venv)"
        )
        assert pin.specifier.contains(dist.version, prereleases=True), (
            f"{name} {dist.version} is installed, the lock pins {pin}: run scripts/setup.sh"
        )
