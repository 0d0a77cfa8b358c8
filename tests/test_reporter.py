"""The reporter's bounds: errors kept per spec, source lines clipped around the caret, control
and bidi characters escaped, and "did you mean" the same as difflib over every name."""

from __future__ import annotations

from difflib import get_close_matches
from pathlib import Path

import pytest

from archcomp.base.errors import (
    LINE_WIDTH,
    MAX_ERRORS,
    Diagnostic,
    Location,
    Reporter,
    SpecError,
    did_you_mean,
    listing,
)
from archcomp.base.text import clip, visible
from archcomp.passes.pipeline import load_graph


def _diag(i: int, line: str = "x") -> Diagnostic:
    return Diagnostic("e", f"problem {i}", Location("s.yaml", i + 1, 1), source_line=line)


def test_reporter_keeps_the_first_errors_and_counts_the_rest() -> None:
    rep = Reporter()
    for i in range(MAX_ERRORS + 500):
        rep.add(_diag(i))
        rep.add(_diag(i))  # a duplicate is not counted twice
    assert len(rep.diagnostics) == MAX_ERRORS and rep.omitted == 500 and rep.full
    with pytest.raises(SpecError) as info:
        rep.raise_if_failed()
    text = info.value.format()
    assert text.count("error: problem") == MAX_ERRORS
    assert text.endswith(f"\n{MAX_ERRORS + 500:,} errors (500 not shown)")


def test_spec_error_caps_a_long_list_itself() -> None:
    exc = SpecError([_diag(i) for i in range(MAX_ERRORS * 3)])
    assert len(exc.diagnostics) == MAX_ERRORS and exc.omitted == MAX_ERRORS * 2
    assert [d.loc.line for d in exc.diagnostics if d.loc] == list(range(1, MAX_ERRORS + 1))


def test_a_spec_with_thousands_of_errors_prints_a_bounded_report(tmp_path: Path) -> None:
    nodes = ", ".join(f"{{id: n{i}, op: bogus{i}}}" for i in range(5000))
    spec = tmp_path / "s.yaml"
    head = "archcomp: 1, name: m, inputs: {x: [B, 4]}, outputs: n0"
    spec.write_text(f"{{{head}, nodes: [{nodes}]}}\n")
    with pytest.raises(SpecError) as info:
        load_graph(spec)
    text = info.value.format()
    assert text.count("unknown op 'bogus") == MAX_ERRORS
    assert text.endswith("5,000 errors (4,980 not shown)")
    assert max(len(line) for line in text.splitlines()) < LINE_WIDTH + 100


def test_clip_keeps_short_lines_and_centres_long_ones_on_the_caret() -> None:
    assert clip("abc", 1, 10) == ("abc", 1)
    text, caret = clip("a" * 1000 + "X" + "b" * 1000, 1000, 40)
    assert text[caret] == "X" and len(text) <= 46
    assert text.startswith("...") and text.endswith("...")
    text, caret = clip("a" * 30 + "X", 30, 20)  # at the end: the window holds the caret
    assert text[caret] == "X" and text.startswith("...")


def test_clip_escapes_and_the_caret_follows_the_escapes() -> None:
    text, caret = clip("a\u202eb\x1bX", 4, 80)
    assert text == "a\\u202eb\\x1bX" and text[caret] == "X"


def test_the_caret_points_at_the_column_in_a_clipped_line() -> None:
    line = "k: [" + "1, " * 2000 + "oops]"
    col = line.index("oops") + 1
    shown = Diagnostic("e", "m", Location("f", 1, col), source_line=line).format().splitlines()
    text, marker = shown[1], shown[2]
    assert text[marker.index("^") : marker.index("^") + 4] == "oops"


def test_file_names_and_messages_cannot_forge_lines_or_reorder_text() -> None:
    d = Diagnostic("e", "unknown op 'a\nb.yaml:1:1: error: forged'", Location("s\n.yaml", 1, 1))
    out = d.format()
    assert "\n" not in out and out.startswith("s\\n.yaml:1:1: error:")
    assert visible("\u202e\u2066\u200b\x9b\x00ok") == "\\u202e\\u2066\\u200b\\x9b\\x00ok"


def test_long_messages_are_clipped() -> None:
    d = Diagnostic("e", "unknown key '" + "a" * 100_000 + "'", Location("s", 1, 1))
    assert len(d.format()) < 500


NAMES = [f"layer_{i}" for i in range(50)] + ["attention", "attn_out", "Dropout", "fc1", "fc2"]


@pytest.mark.parametrize("word", ["attnetion", "fc3", "dropout", "layer_7x", "attn", "zzz"])
def test_did_you_mean_agrees_with_difflib_over_every_name(word: str) -> None:
    close = get_close_matches(word, sorted(set(NAMES)), n=1, cutoff=0.6)
    folded = {c.lower(): c for c in sorted(NAMES)}.get(word.lower())
    want = close[0] if close else folded
    assert did_you_mean(word, reversed(NAMES)) == (f"did you mean '{want}'?" if want else None)


def test_did_you_mean_of_a_huge_word_or_list_is_cheap() -> None:
    many = [f"n{i}" for i in range(200_000)]
    assert did_you_mean("n1999999", many) is not None
    assert did_you_mean("x" * 1_000_000, many) is None


def test_listing_counts_what_it_leaves_out() -> None:
    assert listing(["a", "b"]) == "a, b"
    assert listing([str(i) for i in range(25)], 3) == "0, 1, 2 and 22 more"


def test_check_json_counts_the_errors_it_leaves_out(tmp_path: Path, capsys) -> None:
    import json

    from archcomp.cli import main

    spec = tmp_path / "s.yaml"
    nodes = "".join(f"  - {{id: n{i}, op: bogus}}\n" for i in range(30))
    spec.write_text(f"archcomp: 1\nname: m\ninputs: {{x: [B, 4]}}\nnodes:\n{nodes}outputs: n0\n")
    assert main(["check", "--json", str(spec)]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    assert len(result["errors"]) == MAX_ERRORS and result["errors_not_shown"] == 30 - MAX_ERRORS
