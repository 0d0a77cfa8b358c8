"""The zoo's vision specs at their published sizes: each spec's defaults have the parameter
count of transformers' model of the flagship config, built on the meta device (nothing
allocated), and tests/spec_library.py's LIBRARY records that count. The equivalence and
round-trip tests of these families are tests/test_checkpoints.py's, on tests/hf_zoo_vision.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_models import FAMILIES  # first: it imports the zoo's groups, this one included
from hf_zoo_vision import FLAGSHIP, flagship_parameters
from spec_library import LIBRARY

import archcomp

SPECS = Path(__file__).resolve().parent.parent / "specs"

pytest.importorskip("transformers")


@pytest.mark.parametrize("name", sorted(FLAGSHIP))
def test_defaults_have_the_published_parameter_count(name: str) -> None:
    assert name in FAMILIES
    want = flagship_parameters(name)
    assert archcomp.summary(SPECS / f"{name}.yaml").parameters == want
    assert LIBRARY[name][0] == want
