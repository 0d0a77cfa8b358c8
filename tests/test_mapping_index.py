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
from typing import Any

import pytest

from archcomp.base import gcpause
from archcomp.base.errors import MAX_CANDIDATES, SpecError, did_you_mean
from archcomp.checkpoints.mapping import Rule, _plain_copies, load_mapping
from archcomp.checkpoints.patterns import KeyIndex, parse, plain_key, plain_keys
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
    rule = _plain_copies({"a.{i}.b{j}": "c.{j}.d{i}"})[0]
    assert rule is not None
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


def test_key_index_in_bulk_agrees_with_one_name_at_a_time() -> None:
    more = [*PATTERNS, "layers.7.{i}.{j}.w", "layers.{i}.7.w", "k1{i}", "k{i}"]
    keys = [parse(p).plain for p in more]
    index = KeyIndex.of((k, n) for n, k in enumerate(keys) if k is not None)
    names = [n for n in _names(random.Random(1)) if "#" not in n]  # '#': one at a time
    names += ["k10", "k1", "k01", "layers.7.3.4.w", "layers.3.7.w", "nothing", "emb"]
    names += ["layers.7.8.w", "layers.7.9.w", "layers.7.8.w"]  # a pattern of literal runs only
    assert index.bindings_many(names) == [index.bindings(n) for n in names]
    odd = [*names[:50], "layers.1\n2.w", "layers.#.w"]  # a newline or '#': one at a time
    assert index.bindings_many(odd) == [index.bindings(n) for n in odd]


BULK_MAPPING = """archcomp_mapping: 1
spec: gpt2
checkpoint: {model_type: x, architecture: X}
tensors:
  a.{i}.w: m.{i}.w
  a.{i}.b: m.{i}.b
  b7.{i}.w: n.{i}.w
  b8.{i}.w: n.{i}.w
  c.{i}.{j}.w: o.{i}.{j}.w
  d.{i}.w: drop
  e.{i}.w: {tie: "a.{i}.w"}
  f.{i}.qkv: {to: "p.{i}.{q,k,v}", transforms: [{split: 0}]}
  g.{i}.w: {to: "m.{i}.g", transforms: [transpose]}
  h.{i}.{u,v}: {to: "q.{i}", transforms: [concat]}
  s.{i}.{e}.w: {to: "r.{i}", transforms: [{stack: e}]}
"""


Case = tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]], dict[str, str]]


def _bulk_cases(rng: random.Random) -> list[Case]:
    """Checkpoints, models and ties: the happy path, and each problem beside bulk copies."""
    ck = {f"a.{i}.w": (2,) for i in range(6)} | {f"a.{i}.b": (1,) for i in range(6)}
    ck |= {"b7.0.w": (3,), "b8.1.w": (3,), "c.1.2.w": (1,), "d.0.w": (1,), "e.0.w": (2,)}
    ck |= {"f.0.qkv": (6,), "g.0.w": (2, 3)}
    model = {f"m.{i}.w": (2,) for i in range(6)} | {f"m.{i}.b": (1,) for i in range(6)}
    model |= {"n.0.w": (3,), "n.1.w": (3,), "o.1.2.w": (1,), "m.0.g": (3, 2)}
    model |= {"p.0.q": (2,), "p.0.k": (2,), "p.0.v": (2,)}
    lacking = {"q.3": (4,), "r.1": (2, 2), "o.3.4.w": (1,), "p.4.k": (2,), "zz.9": (1,)}
    no_g = {k: v for k, v in ck.items() if k != "g.0.w"}
    cases: list[Case] = [
        (ck, model, {}),
        ({**ck, "a.07.w": (2,), "zz.1.w": (1,), "a.3": (1,)}, model, {}),  # unused keys
        (ck, {k: v for k, v in model.items() if k != "m.3.w"}, {}),  # a stray
        ({**ck, "a.09.w": (2,)}, {**model, "m.09.w": (2,)}, {}),  # 09 is no index
        ({**ck, "a.5.w": (9,)}, model, {}),  # a shape mismatch, found after bulk
        (ck, model, {"m.4.b": "m.4.w"}),  # a bulk copy fills a tied name
        (ck, model, {"p.0.k": "p.0.q"}),  # a split fills a tied name
        ({**ck, "b7.1.w": (3,)}, model, {}),  # two bulk copies fill n.1.w
        ({**ck, "e.1.w": (2,), "d.1.w": (1,)}, model, {}),  # a tie to a bulk copy's key
        ({"g.2.w": (2, 3), **ck}, {**model, "m.2.g": (3, 2)}, {}),
        ({k.replace("a.", "x."): v for k, v in ck.items()}, model, {}),  # nothing filled
        (ck, {**model, **lacking}, {}),  # keys each rule lacks, and a name no rule has
        ({**ck, "h.3.u": (2,), "s.1.0.w": (2,)}, {**model, **lacking}, {}),
        # with g.{i}.w -> m.{i}.w, a key that a bulk copy fills is filled by a transpose too:
        # before and after the bulk copy's key
        ({"g.0.w": (2, 3), **no_g}, model, {}),
        ({**no_g, "g.0.w": (2, 3)}, model, {}),
    ]
    out = []
    for c, m, ties in cases:
        items = list(c.items())
        rng.shuffle(items)
        out.append((dict(items), m, ties))
        out.append((c, m, ties))
    return out


def test_bulk_copies_plan_as_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain copies planned in bulk give the same steps, in the same order, and the same
    diagnostics as key by key, among other rules and beside each problem."""
    import archcomp.checkpoints.plan as plan

    path = tmp_path / "m.yaml"
    path.write_text(BULK_MAPPING)
    mapping = load_mapping(path)
    path.write_text(BULK_MAPPING.replace("m.{i}.g", "m.{i}.w"))
    contested = load_mapping(path)

    def planned(m: Any, case: Case) -> object:
        try:
            return plan_import(m, {}, case[0], case[1], case[2], "model.safetensors")
        except SpecError as exc:
            return str(exc)

    cases = _bulk_cases(random.Random(2))
    for m in (mapping, contested):
        bulk = [planned(m, case) for case in cases]
        with monkeypatch.context() as p:
            none = lambda self, names, every=False: ([], [*range(len(names))])  # noqa: E731
            p.setattr(KeyIndex, "columns", none)
            by_key = [planned(m, case) for case in cases]
        assert bulk == by_key
        if m is mapping:
            assert isinstance(bulk[0], plan.Plan) and len(bulk[0].steps) == 17
        else:
            assert "filled twice: from 'g.0.w' and from 'a.0.w'" in str(bulk[-3])
            assert "filled twice: from 'a.0.w' and from 'g.0.w'" in str(bulk[-1])


def test_keys_generalized_in_bulk_as_one_by_one() -> None:
    from archcomp.checkpoints.plan import _INDEX, _generalized

    keys = ["h.0.w", "h.12.w.3", "h0.w", "1.x", "h.07", "a..5", "b.5.", "", "x.1\n2.y"]
    assert _generalized(keys) == [_INDEX.sub("{i}", k) for k in keys]
    assert _generalized(keys[:-1]) == [_INDEX.sub("{i}", k) for k in keys[:-1]]
    assert _generalized([]) == []


def test_plain_keys_in_bulk_are_plain_key_of_each() -> None:
    texts = ["a.{i}.b{j}", "a.{i}.{i}", "x{q,k}", "", "w", "a.{I}", "a.{i}\n.b", "é.{i}", "drop"]
    got = plain_keys(texts)
    assert got == [plain_key(t) for t in texts]
    assert [k is None for k in got] == [False, True, True, True, False, True, True, True, False]
    assert [str(k) for k in got if k is not None] == ["a.{i}.b{j}", "w", "drop"]
