"""Text from a spec made safe to show: invisible and reordering characters as escapes.

A spec's strings (labels, op names, file names) reach a terminal, a DOT file and an SVG. Control
characters can forge lines (a newline in a file name prints a second ``file:1:1: error:``) or
drive the terminal (ESC, C1 CSI); bidi controls reorder what is shown (the "Trojan Source"
trick); zero-width characters hide text. :func:`visible` writes each of them as a Python-style
escape (``\\n``, ``\\x9b``, ``\\u202e``), so what is shown is what is there.
"""

from __future__ import annotations

import re

# C0 controls and DEL, C1 controls, the Arabic letter mark, zero-width and bidi marks,
# line and paragraph separators, bidi embeddings/overrides/isolates, word joiner and the
# invisible operators, the BOM / zero-width no-break space, interlinear annotation marks.
INVISIBLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group(0)
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every invisible, control or bidi character written as an escape."""
    return INVISIBLE.sub(_escape, text) if INVISIBLE.search(text) else text


def clip(text: str, at: int, width: int) -> tuple[str, int]:
    """``text`` made :func:`visible`, cut to about ``width`` characters around index ``at``
    when longer; returns the text and ``at``'s index in it (for a caret).

    Cut ends are marked with ``...``. Only a window of the raw text is escaped, so a
    megabyte line costs no more than a short one."""
    at = max(0, min(at, len(text)))
    start = max(0, min(at - width // 2, len(text) - width))
    end = min(len(text), start + width)
    before, after = visible(text[start:at]), visible(text[at:end])
    cut_left, cut_right = start > 0, end < len(text)
    excess = len(before) + len(after) - width
    if excess > 0:  # escapes made the window wider
        trim = min(excess, max(0, len(before) - width // 2))
        if trim:
            before, cut_left = before[trim:], True
        if excess > trim:
            after, cut_right = after[: len(after) - (excess - trim)], True
    left = "..." if cut_left else ""
    right = "..." if cut_right else ""
    return left + before + after + right, len(left) + len(before)
