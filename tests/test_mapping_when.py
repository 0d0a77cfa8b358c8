"""Mapping rules that apply only when an expression of the spec's params holds (``when``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from archcomp import SpecError
from archcomp.checkpoints.config import ConfigProblem, applied
from archcomp.checkpoints.mapping import load_mapping

MAPPING = """archcomp_mapping: 1
spec: gpt2
checkpoint: {model_type: gpt2, architecture: GPT2LMHeadModel}
tensors:
  wte.weight: wte.weight
  lm_head.weight: {to: lm_head.weight, when: "${not tied}"}
  lm_head.bias: {drop: a bias the spec lacks, when: "${bias and not tied}"}
  experts.{e}.w{1,2}: {to: "layers.{e}.w{1,2}", when: true}
"""


def _load(tmp_path: Path, text: str = MAPPING) -> object:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return load_mapping(path)


@pytest.mark.parametrize(
    ("env", "kept"),
    [
        ({"tied": False, "bias": True}, ["wte.weight", "lm_head.weight", "lm_head.bias"]),
        ({"tied": False, "bias": False}, ["wte.weight", "lm_head.weight"]),
        ({"tied": True, "bias": True}, ["wte.weight"]),
    ],
)
def test_rules_follow_their_when(tmp_path: Path, env: dict[str, bool], kept: list[str]) -> None:
    """Only the rules whose ``when`` holds are kept (a planted 'keep every rule' fails)."""
    m = _load(tmp_path)
    rules = applied(m, env).rules  # type: ignore[arg-type]
    keys = [str(r.hf[0]) for r in rules]
    assert keys == [*kept, "experts.{e}.w1", "experts.{e}.w2"]
    assert len(m.rules) == 5  # type: ignore[attr-defined]


def test_when_errors_are_located(tmp_path: Path) -> None:
    m = _load(tmp_path)
    with pytest.raises(ConfigProblem) as exc:
        applied(m, {"tied": 3, "bias": True})  # type: ignore[arg-type]
    assert exc.value.path == ("tensors", "lm_head.weight", "when")
    assert "expected a bool condition, found int 3" in exc.value.message
    with pytest.raises(ConfigProblem, match="unknown name 'tied'"):
        applied(m, {"bias": True})  # type: ignore[arg-type]


def test_when_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        _load(tmp_path, MAPPING.replace('when: "${not tied}"', "when: yes"))
    assert "m.yaml:6:" in str(exc.value) and "'when'" in str(exc.value)


def test_short_rules_carry_every_field_of_a_long_rule() -> None:
    """The short form's tuple mirrors RuleDecl: a field added to one must reach the other (a
    'when' missing from the tuple was a crash on every short rule)."""
    from archcomp.checkpoints.mapping import RuleDecl, _Short

    assert set(_Short._fields) == set(RuleDecl.model_fields)
