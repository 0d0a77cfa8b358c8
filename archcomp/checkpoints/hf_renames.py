"""transformers' plain key renames of a saved checkpoint (legacy name -> the module's), for
loading a folder into an imported spec by the module's own keys: GPT-NeoX's
``save_pretrained`` writes ``lm_head.weight`` under its legacy name ``embed_out.weight``.

Only transformers' ``WeightRenaming`` entries are read as renames (patterns of its own code,
never of the checkpoint). Of its ``WeightConverter``s, only the one that stacks experts saved one
by one (``MergeModulelist(dim=0)``, then at most a ``Concatenate``: Mixtral's
``experts.{e}.w1``/``w3``, DeepSeek-V3's ``experts.{e}.gate_proj``/``up_proj``) is read, as the
mapping's own ``stack`` and ``concat`` transforms (:func:`hf_stacks`); any other conversion is
left out."""

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
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:
        return None
    made = _conversions(folder, architecture)
    renames = [t for t in made or [] if type(t) is WeightRenaming]
    if not renames:
        return None
    return lambda key: str(rename_source_key(key, renames, [])[0])


def _conversions(folder: Path, architecture: str | None) -> list[Any] | None:
    """transformers' weight conversions of the class (and its sub-models) built from the
    folder's config.json on the meta device; None without transformers or where it fails."""
    try:
        import torch
        import transformers
        from transformers.conversion_mapping import get_model_conversion_mapping
    except ImportError:
        return None
    cls = getattr(transformers, architecture or "", None)
    if cls is None or not hasattr(cls, "config_class"):
        return None
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            model = cls(config)
        return list(get_model_conversion_mapping(model))
    except Exception:  # any failure of transformers: no conversions, as before
        return None


def hf_stacks(
    folder: Path, architecture: str | None, names: list[str], rename: Callable[[str], str]
) -> tuple[dict[str, Any], set[str]]:
    """Mapping rules that stack experts saved one by one into transformers' stacked tensors,
    as transformers' own ``WeightConverter`` of the class does on loading: ``{source pattern:
    {to: key, transforms: [{stack: e}, {concat: d}]}}``, and the names of ``names`` they read.
    ``rename`` gives a stacked tensor's key its module's name (Mixtral's
    ``block_sparse_moe.`` -> ``mlp.``)."""
    rules: dict[str, Any] = {}
    read: set[str] = set()
    for conv in _conversions(folder, architecture) or []:
        steps = _stack_steps(conv)
        if steps is None:
            continue
        srcs, target = list(conv.source_patterns), str(conv.target_patterns[0])
        found: dict[str, dict[int, set[int]]] = {}  # prefix -> source -> expert indices
        for n in names:
            for j, src in enumerate(srcs):
                hit = re.search(re.escape(src).replace(r"\*", r"(\d+)"), n)
                if hit is not None and hit.end() == len(n):
                    found.setdefault(n[: hit.start()], {}).setdefault(j, set()).add(int(hit[1]))
        for prefix, by_src in found.items():
            experts = by_src.get(0, set())
            whole = set(range(len(experts)))
            if len(by_src) != len(srcs) or any(e != whole for e in by_src.values()):
                continue  # an expert or a part missing: left to the strict check
            pattern = _alternatives(prefix, srcs)
            if pattern is None:
                continue
            rules[pattern] = {"to": rename(prefix + target), "transforms": [dict(t) for t in steps]}
            read |= {prefix + s.replace("*", str(e)) for s in srcs for e in experts}
    return rules, read & set(names)


def _stack_steps(conv: Any) -> list[Any] | None:
    """``[{stack: e}]`` or ``[{stack: e}, {concat: d}]`` for a converter that merges a module
    list on dim 0 (then concatenates its sources on ``d``); None for any other."""
    ops = [(type(o).__name__, getattr(o, "dim", None)) for o in getattr(conv, "operations", [])]
    srcs, tgts = getattr(conv, "source_patterns", []), getattr(conv, "target_patterns", [])
    if len(tgts) != 1 or not srcs or not all(s.count("*") == 1 for s in srcs):
        return None
    if ops == [("MergeModulelist", 0)] and len(srcs) == 1:
        return [{"stack": "e"}]
    concat = len(ops) == 2 and ops[0] == ("MergeModulelist", 0) and ops[1][0] == "Concatenate"
    if concat and isinstance(ops[1][1], int) and len(srcs) > 1:
        return [{"stack": "e"}, {"concat": ops[1][1]}]
    return None


def _alternatives(prefix: str, srcs: list[str]) -> str | None:
    """``prefix.experts.{e}.{w1,w3}.weight``: the sources as one pattern, the expert index the
    placeholder ``{e}``, the one dotted part where they differ its alternatives; None where
    they differ otherwise."""
    heads = {s.split("*")[0] for s in srcs}
    tails = [s.split("*")[1].split(".") for s in srcs]
    if len(heads) != 1 or len({len(t) for t in tails}) != 1:
        return None
    differ = [j for j in range(len(tails[0])) if len({t[j] for t in tails}) > 1]
    if len(srcs) == 1 or len(differ) != 1:
        return f"{prefix}{heads.pop()}{{e}}{'.'.join(tails[0])}" if len(srcs) == 1 else None
    parts = list(tails[0])
    parts[differ[0]] = "{" + ",".join(t[differ[0]] for t in tails) + "}"
    return f"{prefix}{heads.pop()}{{e}}{'.'.join(parts)}"


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
