"""transformers' plain key renames of a saved checkpoint (legacy name -> the module's), for
loading a folder into an imported spec by the module's own keys: GPT-NeoX's
``save_pretrained`` writes ``lm_head.weight`` under its legacy name ``embed_out.weight``.

Only transformers' ``WeightRenaming`` entries are read (patterns of its own code, never of the
checkpoint); conversions that reshape or merge tensors are not renames and are left out."""

from __future__ import annotations

import re
from typing import Any


def hf_renames(architecture: str | None, model_type: str | None) -> list[tuple[str, str]]:
    """(source regex, target) pairs transformers applies to this class's keys on loading;
    none without transformers."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    except ImportError:
        return []
    out: list[tuple[str, str]] = []
    for name in (architecture, model_type):
        entries: Any = get_checkpoint_conversion_mapping(name) if name else None
        for e in entries or []:
            src: Any = getattr(e, "source_patterns", None)
            tgt: Any = getattr(e, "target_patterns", None)
            if type(e).__name__ == "WeightRenaming" and len(src or ()) == len(tgt or ()) == 1:
                out.append((str(src[0]), str(tgt[0])))
    return out


def renamed(names: list[str], keys: set[str], renames: list[tuple[str, str]]) -> dict[str, str]:
    """Checkpoint key -> model key, for each name the model has (by its own name or by one
    rename); names it has neither way are left out."""
    out: dict[str, str] = {}
    for n in names:
        if n in keys:
            out[n] = n
            continue
        for src, tgt in renames:
            new = re.sub(src, tgt, n)
            if new != n and new in keys:
                out[n] = new
                break
    return out
