"""Text that reaches generated Python source: only as a literal, or not at all.

Every string from a spec that the compiler writes into source (the forward's docstring, the
``--emit-python`` class docstring, shape comments, constructor arguments) goes through one of
these, so no spec text can become code:

- :func:`literal`: ``repr`` of a plain value (str, int, float, bool, None, and tuples and lists
  of them); a non-finite float as ``float('inf')``;
- :func:`docstring`: a triple-quoted literal when that reads back as exactly the text
  (checked with :func:`ast.literal_eval`), else ``repr`` of it;
- :func:`comment`: ``# text`` for one line of visible characters, else nothing.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from archcomp.base.text import INVISIBLE


class NotALiteral(TypeError):
    """A value with no literal spelling (an object, a set, a dict key that is not a string)."""


def literal(value: Any) -> str:
    """Python source that evaluates to ``value``; built by ``repr``, never by pasting text."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise NotALiteral(f"{type(value).__name__} has no literal spelling")


def docstring(text: str) -> str:
    """A docstring literal for ``text``: ``\"\"\"text\"\"\"`` if that reads back as exactly
    ``text`` (no quotes, backslashes or line breaks that would change or end it), else
    ``repr(text)``."""
    pretty = f'"""{text}"""'
    if not INVISIBLE.search(text):
        try:
            if ast.literal_eval(pretty) == text:
                return pretty
        except (SyntaxError, ValueError):
            pass
    return repr(text)


def comment(text: str | None) -> str:
    """``  # text`` for a one-line, visible ``text``; ``""`` (dropped) for anything else."""
    if not text or INVISIBLE.search(text):
        return ""
    return f"  # {text}"
