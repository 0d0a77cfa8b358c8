"""The checkpoint planner's fast paths agree with their plain definitions: the key index with
one regex per pattern, a plain rule with the Rule constructor, "did you mean" with its loop,
and the collector pause hands what a stage made to the oldest generation."""

from __future__ import annotations

import dataclasses
import gc
import random
import re
from difflib import get_close_matches
from pathlib import Path

import pytest

from archcomp.base import gcpause
from archcomp.base.errors import MAX_CANDIDATES, SpecError, did_you_mean
from archcomp.checkpoints.mapping import Rule, _plain_copy, load_mapping
from archcomp.checkpoints.patterns import KeyIndex, parse, plain_key
from archcomp.checkpoints.plan import plan_import

PATTERNS = [
    "layers.{i}.w",
    "layers.1{i}.w",  # a placeholder beside literal digits: the regex decides
    "layers.{i}.{j}.w",
    "layers.{j}.{i}.b",  # placeholders out of name order
    "layers.7.{i}.w",  # a literal run beside a placeholder
    "layers.7.8.w",
    "h{i}x{j}y3",
    "emb",
]


def _names(rng: random.Random) -> list[str]:
    runs = ["0", "1", "7", "8", "12", "07", "10", "1" * 19, "123456789012345678"]
    shapes = ["layers.#.w", "layers.#.#.w", "layers.#.#.b", "h#x#y#", "emb", "layers.#.w#"]
    out = []
    for _ in range(400):
        shape = rng.choice(shapes)
        while "#" in shape:
            shape = shape.replace("#", rng.choice(runs), 1)
        out.append(shape)
    return [*out, "layers.#.w", "emb#", "layers..w"]


def test_key_index_agrees_with_a_regex_per_pattern() -> None:
    keys = [parse(p).plain for p in PATTERNS]
    index = KeyIndex.of((k, n) for n, k in enumerate(keys) if k is not None)
    for name in _names(random.Random(0)):
        want = [(n, k.match(name)) for n, k in enumerate(keys) if k and k.match(name) is not None]
        got = sorted((n, values) for _, n, values in index.find(name))
        assert got == want, name


def test_a_checkpoint_key_with_a_hash_is_unused_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "archcomp_mapping: 1\nspec: gpt2\ncheckpoint: {model_type: x, architecture: X}\n"
        "tensors:\n  layers.{i}.w: m.{i}.w\n"
    )
    mapping = load_mapping(path)
    checkpoint = {"layers.#.w": (1,), "layers.0.w": (1,)}
    with pytest.raises(SpecError, match=re.escape("tensor 'layers.#.w' is used by no rule")):
        plan_import(mapping, {}, checkpoint, {"m.0.w": (1,)}, {}, "model.safetensors")


def test_a_plain_rule_is_the_rule_the_constructor_makes() -> None:
    rule = _plain_copy("a.{i}.b{j}", "c.{j}.d{i}")
    src, dst = plain_key("a.{i}.b{j}"), plain_key("c.{j}.d{i}")
    want = Rule("copy", (src,), (dst,), (), ("tensors", "a.{i}.b{j}"))
    assert rule == want and hash(rule) == hash(want)
    assert {f.name: getattr(rule, f.name) for f in dataclasses.fields(Rule)} == vars(want)
    assert rule.spec_templates == ("c.{j}.d{i}",)


def _did_you_mean_by_loop(word: str, candidates: list[str]) -> str | None:
    """did_you_mean as first written: a Python line per candidate."""
    n, lowered, cands, folded = len(word), word.lower(), [], None
    for c in candidates:
        if 7 * len(c) >= 3 * n and 3 * len(c) <= 7 * n:
            cands.append(c)
        if c.lower() == lowered and (folded is None or c > folded):
            folded = c
    if len(cands) > MAX_CANDIDATES:
        cands.sort(key=lambda c: (abs(len(c) - n), c))
        del cands[MAX_CANDIDATES:]
    close = get_close_matches(word, cands, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"did you mean '{folded}'?" if folded is not None else None


def test_did_you_mean_agrees_with_its_loop_past_the_candidate_cap() -> None:
    rng = random.Random(1)
    for size in (3, 40, MAX_CANDIDATES + 500):
        names = ["".join(rng.choices("aAb._01", k=rng.randint(0, 12))) for _ in range(size)]
        for word in [*rng.sample(names, 3), "a.B_0", "", "ab" * 9]:
            for w in (word, word.swapcase()):
                assert did_you_mean(w, iter(names)) == _did_you_mean_by_loop(w, names), w


def test_a_pause_leaves_what_it_made_to_the_oldest_generation() -> None:
    gc.collect()
    with gcpause.paused():
        made = [[i] for i in range(50_000)]  # tracked objects, all young
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_count()[0] < 700  # no young collection pending
    assert any(made[0] is o for o in gc.get_objects(generation=2))
    gc.freeze()  # a program's own frozen objects stay frozen
    try:
        frozen = gc.get_freeze_count()
        with gcpause.paused():
            more = [[i] for i in range(1000)]
        assert gc.get_freeze_count() == frozen and gc.isenabled() and more
    finally:
        gc.unfreeze()
