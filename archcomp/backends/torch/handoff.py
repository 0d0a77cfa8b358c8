"""Block inputs handed over: a value whose last use is a block call leaves the caller.

fx's generated forward drops each value after its last use (``x = None``), but a value passed
to a block stays referenced by the caller's frame (and ``nn.Module.__call__``'s arguments)
until the block returns, whatever the block does with it: Gemma 2's soft cap of the logits
held its input, a logits-sized tensor, beside the two it makes. So a caller puts such a value
in a one-element list, which it passes instead of the value::

    lm_head = [lm_head]
    logit_softcap = self.logit_softcap(lm_head);  lm_head = None  # (B, T, 61)

and every block's forward takes its inputs out of such lists first::

    def forward(self, x):
        x = x.pop() if type(x) is list else x  # handed over: the caller keeps no reference

so the block holds the only reference and drops it at its own last use. A block called with
tensors (a test, activation checkpointing's recompute, the memory tracer) runs as before.
Only the generated text changes; fx's graph keeps its call_module nodes as they were.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# fx's chunks: a call of a submodule by name, and the values the statement is the last to use
_CALL = re.compile(r"^(\w+) = (self(?:\.\w+|\[\d+\])+)\((.*)\)$")
_DEAD = re.compile(r"^;  ((?:\w+ = )+)None\n$")


def prologue(names: list[str]) -> list[str]:
    """The lines of a block's forward that take its inputs out of handed-over lists."""
    return [
        f"    {n} = {n}.pop() if type({n}) is list else {n}  # handed over: the caller "
        "keeps no reference"
        for n in names
    ]


def take(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with each handed-over list replaced by its value (a block's forward whose
    arguments are kept for later, as activation checkpointing keeps them)."""
    return tuple(a.pop() if type(a) is list else a for a in args)


def hand_over(body: list[str], is_block: Callable[[str], bool], keep: frozenset[str]) -> list[str]:
    """fx's body chunks with a boxing line before each block call, for the call's arguments
    that are plain names, appear once in it and are dead after it (all but ``keep``: the
    model's own inputs, which its caller holds anyway)."""
    out: list[str] = []
    for i, chunk in enumerate(body):
        m = _CALL.match(chunk)
        dead = _DEAD.match(body[i + 1]) if m is not None and i + 1 < len(body) else None
        if m is not None and dead is not None and is_block(m.group(2)):
            args = m.group(3)
            gone = set(dead.group(1).split(" = ")[:-1]) - keep
            for a in (p.strip() for p in args.split(",")):
                if a in gone and len(re.findall(rf"\b{a}\b", args)) == 1:
                    out.append(f"{a} = [{a}]\n")
        out.append(chunk)
    return out
