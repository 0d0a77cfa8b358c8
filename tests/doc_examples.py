"""The Python and shell examples of README.md and docs/*.md, as a test runs them.

Every fenced block marked ``python``, ``bash`` or ``sh`` is an example; it runs unless the line
before its fence is ``<!-- not run: REASON -->`` (a clone's scripts, a checkpoint folder or
torchrun that a test cannot have). tests/test_wheel.py runs each one against the installed
wheel, from an empty folder outside the repository, as a reader following the docs would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
LANGUAGES = {"python": "python", "bash": "shell", "sh": "shell"}
FENCE = re.compile(r"^( *)```(\w*)\s*$")
NOT_RUN = re.compile(r"^\s*<!-- not run: (.+) -->\s*$")


@dataclass(frozen=True)
class Example:
    doc: Path
    line: int  # of the opening fence, 1-based
    language: str  # "python" or "shell"
    code: str
    not_run: str | None  # the reason it is not run, or None

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def examples(doc: Path) -> list[Example]:
    """The examples of ``doc`` in order (indented fences inside list items included)."""
    lines = doc.read_text().splitlines()
    out: list[Example] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(2):
            i += 1
            continue
        indent, lang = len(m.group(1)), m.group(2)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        if lang in LANGUAGES:
            body = "\n".join(line[indent:] for line in lines[i + 1 : end])
            mark = NOT_RUN.match(lines[i - 1]) if i else None
            reason = mark.group(1) if mark else None
            out.append(Example(doc, i + 1, LANGUAGES[lang], body + "\n", reason))
        i = end + 1
    return out


def all_examples() -> list[Example]:
    return [e for doc in DOCS for e in examples(doc)]
