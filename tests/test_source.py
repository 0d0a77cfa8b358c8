"""Safe YAML loading: positions, YAML 1.2 scalars, and refusal of unsafe or oversized input."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from archcomp.base.errors import SpecError, UsageError
from archcomp.frontend import source
from archcomp.frontend.source import MAX_BYTES, MAX_DEPTH, decode, load_yaml, read_spec_file


def load(text: str):
    return load_yaml(text, "t.yaml")


def codes(exc: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [d.code for d in exc.value.diagnostics]


def test_positions_of_keys_and_values() -> None:
    value, doc = load("a: 1\nb:\n  - x\n  - {c: 2}\n")
    assert value == {"a": 1, "b": ["x", {"c": 2}]}
    assert doc.value_marks[("a",)] == (1, 4)
    assert doc.key_marks[("b",)] == (2, 1)
    assert doc.value_marks[("b", 1, "c")] == (4, 9)
    assert doc.loc(("b", 1, "missing")).line == 4  # falls back to the parent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("1:30", "1:30"),
        ("1.10", 1.1),
        ("true", True),
        ("False", False),
        ("~", None),
        ("null", None),
        ("0o17", 15),
        ("0x1F", 31),
        ("-3", -3),
        ("1e3", 1000.0),
        ("'017'", "017"),
        ("1_000", "1_000"),
    ],
)
def test_yaml_12_core_scalars(text: str, expected: object) -> None:
    value, _ = load(f"v: {text}\n")
    assert value["v"] == expected
    assert type(value["v"]) is type(expected)


def test_leading_zero_is_refused() -> None:
    with pytest.raises(SpecError) as exc:
        load("v: 017\n")
    assert codes(exc) == ["yaml-ambiguous-number"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("a: !!python/object/apply:os.system ['id']\n", "yaml-tag"),
        ("a: !!python/name:os.system\n", "yaml-tag"),
        ("a: !custom 1\n", "yaml-tag"),
        ("a: !!set {x}\n", "yaml-tag"),
        ("a: &x 1\nb: *x\n", "yaml-alias"),
        ("a: {<<: {b: 1}}\n", "yaml-merge-key"),
        ("a: 1\na: 2\n", "duplicate-key"),
        ("? [1, 2]\n: x\n", "yaml-key"),
        ("1: x\n", "yaml-key"),
        ("null: x\n", "yaml-key"),
        ("a: 1\n---\nb: 2\n", "yaml-multiple-documents"),
        ("", "empty-spec"),
        ("# only a comment\n", "empty-spec"),
        ("a: [1, 2\n", "yaml-syntax"),
    ],
)
def test_refused_yaml(text: str, code: str) -> None:
    with pytest.raises(SpecError) as exc:
        load(text)
    assert codes(exc) == [code]


def test_alias_bomb_is_refused_at_the_first_anchor() -> None:
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n" * 3
    with pytest.raises(SpecError) as exc:
        load(bomb)
    assert exc.value.diagnostics[0].loc is not None
    assert exc.value.diagnostics[0].loc.line == 1


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        ("a: " + "[" * 10_000 + "]" * 10_000 + "\n", 1, 67),  # the 64th '[' under the root
        ("a: {" + "k: {" * 10_000 + "}" * 10_001 + "\n", 1, 256),
        ("a:\n  " + "- " * 10_000 + "x\n", 2, 129),
        ("a: [" + "{k: [" * 5_000 + "\n", 1, 160),  # level 65 is the 32nd '{', at 5 + 5 * 31
    ],
    ids=["flow_sequence", "flow_mapping", "block_sequence", "flow_mixed"],
)
def test_deep_nesting_is_refused_without_recursion(text: str, line: int, col: int) -> None:
    """archcomp's own limit, at the same place whatever limit the installed YAML library has."""
    with pytest.raises(SpecError) as exc:
        load(text)
    (d,) = exc.value.diagnostics
    assert (d.code, d.message) == ("spec-too-deep", f"spec nests deeper than {MAX_DEPTH} levels")
    assert d.loc is not None and (d.loc.file, d.loc.line, d.loc.col) == ("t.yaml", line, col)


def _limited_loader(after_events: int) -> type:
    """A parser that stops as libyaml 0.2.6 does ("exceeded maximum nesting depth")."""

    class Limited(yaml.SafeLoader):
        seen = 0

        def get_event(self) -> Any:
            event = super().get_event()
            self.seen += 1
            if self.seen > after_events:
                raise yaml.scanner.ScannerError(
                    "while increasing flow level",
                    event.start_mark,
                    "exceeded maximum nesting depth",
                    event.start_mark,
                )
            return event

    return Limited


def test_a_yaml_library_depth_limit_falls_back_to_archcomps_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whichever PyYAML is installed: a library that stops first is not what the user sees."""
    monkeypatch.setattr(source, "_Parser", _limited_loader(after_events=5))
    with pytest.raises(SpecError) as exc:
        load("a: " + "[" * 200 + "]" * 200 + "\n")
    (d,) = exc.value.diagnostics
    assert d.code == "spec-too-deep" and d.loc is not None and (d.loc.line, d.loc.col) == (1, 67)
    # A shallow spec read by the same limited parser is untouched (the limit was not reached).
    assert load("a: [[1]]\n")[0] == {"a": [[1]]}


def test_a_depth_limit_in_every_parser_is_still_spec_too_deep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(source, "_Parser", _limited_loader(after_events=5))
    monkeypatch.setattr(source, "_PurePython", _limited_loader(after_events=5))
    with pytest.raises(SpecError) as exc:
        load("a: " + "[" * 200 + "]" * 200 + "\n")
    (d,) = exc.value.diagnostics
    assert (d.code, d.message) == ("spec-too-deep", f"spec nests deeper than {MAX_DEPTH} levels")
    assert d.loc is not None and (d.loc.line, d.loc.col) == (
        1,
        5,
    )  # the library's own mark: event 6


def test_invalid_utf8_is_located() -> None:
    with pytest.raises(SpecError) as exc:
        decode(b"a: 1\nb: \xff\xfe\n", "t.yaml")
    d = exc.value.diagnostics[0]
    assert d.code == "invalid-utf8" and d.loc is not None and (d.loc.line, d.loc.col) == (2, 4)


def test_nul_byte_is_located() -> None:
    with pytest.raises(SpecError) as exc:
        decode(b"a: 1\nb: x\x00y\n", "t.yaml")
    d = exc.value.diagnostics[0]
    assert d.code == "invalid-character" and d.loc is not None and (d.loc.line, d.loc.col) == (2, 5)


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_BYTES + 1)
    with pytest.raises(SpecError) as exc:
        read_spec_file(big)
    assert codes(exc) == ["spec-too-large"]


def test_directory_and_missing_file(tmp_path: Path) -> None:
    """The file itself is wrong, not a place in it: a usage error with no position."""
    with pytest.raises(UsageError, match="is not a regular file"):
        read_spec_file(tmp_path)
    with pytest.raises(UsageError, match=r"'.*nope\.yaml' does not exist"):
        read_spec_file(tmp_path / "nope.yaml")


def test_tab_indentation_hint() -> None:
    with pytest.raises(SpecError) as exc:
        load("a:\n\tb: 1\n")
    assert exc.value.diagnostics[0].hint == "YAML does not allow tabs for indentation; use spaces"


def test_a_fifo_is_refused_on_the_open_file_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    with pytest.raises(UsageError) as exc:  # the file itself is wrong: no position in it
        read_spec_file(fifo)  # a check-then-open would block here forever
    assert str(exc.value) == f"spec file '{fifo}' is not a regular file (a FIFO)"


def test_inline_words_read_as_event_by_event() -> None:
    """The reader's inline path (plain words as keys and values) gives the values, marks and
    errors that taking each event through ``_EventReader.event`` gives."""
    from archcomp.base.documents import SourceDoc
    from archcomp.frontend.source import _EventReader

    texts = [
        "a: b\nc: {d: e, f: [g, h]}\nk: yes\nn: null\nt: true\nx: 1\ny: .5\nz: 'q'\n",
        "a:\n  b: c\n  d: !!str e\n  f: &x g\n",
        "a: b\na: c\n",
        "m: {<<: b}\n",
        "- a\n- b: c\n  d: e\n",
        "a: b\n" * 3 + "c: d\n",
    ]
    for text in texts:
        got: list[object] = []
        for inline in (True, False):
            reader = _EventReader(SourceDoc("f", None, text.splitlines()))
            try:
                events = yaml.parse(text, Loader=yaml.SafeLoader)
                if inline:
                    reader.read(events)
                else:
                    for event in events:
                        reader.event(event)
                got.append((reader.root, reader.doc.key_marks, reader.doc.value_marks))
            except SpecError as exc:
                got.append(str(exc))
        assert got[0] == got[1], text


def test_marks_are_a_mapping_of_every_position() -> None:
    """The reader keeps its marks by container (no tuple per entry); the document's marks
    still read, iterate and compare as a dict of path -> (line, column)."""
    _, doc = load("a: 1\nb:\n  - x\n  - {c: 2}\n")
    assert dict(doc.value_marks) == {
        (): (1, 1),
        ("a",): (1, 4),
        ("b",): (3, 3),
        ("b", 0): (3, 5),
        ("b", 1): (4, 5),
        ("b", 1, "c"): (4, 9),
    }
    assert dict(doc.key_marks) == {("a",): (1, 1), ("b",): (2, 1), ("b", 1, "c"): (4, 6)}
    assert ("b", 2) not in doc.value_marks and ("b", "x") not in doc.value_marks
    assert ("b", True) not in doc.value_marks  # True == 1, but no index
    assert doc.loc(("b", 1, "c"), key=True).col == 6
    doc.value_marks[("z",)] = (9, 9)
    assert doc.value_marks[("z",)] == (9, 9) and len(doc.value_marks) == 7
