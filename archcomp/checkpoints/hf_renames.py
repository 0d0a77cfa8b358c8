"""transformers' plain key renames of a saved checkpoint (legacy name -> the module's), for
loading a folder into an imported spec by the module's own keys: GPT-NeoX's
``save_pretrained`` writes ``lm_head.weight`` under its legacy name ``embed_out.weight``.

Only transformers' ``WeightRenaming`` entries are read (patterns of its own code, never of the
checkpoint); conversions that reshape or merge tensors are not renames and are left out."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
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


def hf_renamer(folder: Path, architecture: str | None) -> Callable[[str], str] | None:
    """transformers' own renaming of a saved key on loading, every ``WeightRenaming`` of the
    model and of its sub-models (scoped to their paths, chained: ViT's ``ViTModel`` at
    ``vit.`` renames ``encoder.layer.`` and ``attention.attention.query``); the class built
    from the folder's config.json on the meta device, no weight read. None without
    transformers, or where the class cannot be built."""
    try:
        import torch
        import transformers
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:
        return None
    cls = getattr(transformers, architecture or "", None)
    if cls is None or not hasattr(cls, "config_class"):
        return None
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            model = cls(config)
        renames = [t for t in get_model_conversion_mapping(model) if type(t) is WeightRenaming]
    except Exception:  # any failure of transformers: no renames, as before
        return None
    if not renames:
        return None
    return lambda key: str(rename_source_key(key, renames, [])[0])


def renamed(
    names: list[str],
    keys: set[str],
    renames: list[tuple[str, str]],
    renamer: Callable[[str], str] | None = None,
) -> dict[str, str]:
    """Checkpoint key -> model key, for each name the model has (by its own name, by one
    rename, or by transformers' chained ``renamer``); names it has none of these ways are left
    out."""
    out: dict[str, str] = {}
    for n in names:
        if n in keys:
            out[n] = n
            continue
        new = renamer(n) if renamer is not None else n
        if new != n and new in keys:
            out[n] = new
            continue
        for src, tgt in renames:
            new = re.sub(src, tgt, n)
            if new != n and new in keys:
                out[n] = new
                break
    return out
