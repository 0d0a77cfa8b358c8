"""The mappings shipped with archcomp (``hf/`` inside the spec library) and how one is found:
by a checkpoint's ``model_type`` (``convert``), by a model's spec name (``export``).

:func:`specs_dir` is the one place that knows where the shipped spec folder is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archcomp.base.errors import SpecError, UsageError, did_you_mean
from archcomp.base.paths import OutsideFolder, confined
from archcomp.base.text import visible

if TYPE_CHECKING:
    from archcomp.checkpoints.mapping import Mapping

MAPPINGS = "hf"  # the mappings' folder inside the spec library


def specs_dir() -> Path:
    """The shipped spec library (``archcomp/specs``, what the wheel ships)."""
    from archcomp.frontend.library import SPECS_DIR

    return SPECS_DIR


def shipped_mappings() -> dict[str, Path]:
    """The shipped mapping files by name (``gpt2`` -> ``.../specs/hf/gpt2.yaml``)."""
    folder = specs_dir() / MAPPINGS
    return {p.stem: p for p in sorted(folder.glob("*.yaml")) if p.is_file()}


def shipped_spec(name: str) -> Path | None:
    """The shipped spec called ``name`` (looked up in the folder's listing, never joined)."""
    from archcomp.frontend.library import is_bare_name, model_specs

    return model_specs().get(name) if is_bare_name(name) else None


def resolve_spec(mapping: Mapping) -> Path:
    """The spec a mapping names: a bare name is a shipped spec; anything else is a path
    relative to the mapping file that stays in its folder (symlinks followed)."""
    text = mapping.spec
    path = shipped_spec(text)
    if path is not None:
        return path
    if "://" in text or text.startswith(("/", "\\", "~")) or Path(text).is_absolute():
        raise SpecError(
            [
                mapping.diag(
                    "invalid-value",
                    f"spec '{text}' is not a path relative to the mapping file",
                    ("spec",),
                    hint="write a shipped spec's name (gpt2) or a path inside the mapping's folder "
                    "(specs/my.yaml)",
                )
            ]
        )
    base = mapping.path.parent if mapping.path is not None else Path.cwd()
    try:
        path = confined(base, text)
    except OutsideFolder as exc:
        raise SpecError(
            [
                mapping.diag(
                    "invalid-value",
                    f"spec '{visible(text)}' {exc}: a mapping's spec is a shipped spec's name "
                    "or a file in the mapping's folder",
                    ("spec",),
                )
            ]
        ) from None
    if not path.is_file():
        known = [p.stem for p in specs_dir().glob("*.yaml")]
        raise SpecError(
            [
                mapping.diag(
                    "spec-not-found",
                    f"spec '{text}' is neither a shipped spec nor a file beside the mapping",
                    ("spec",),
                    hint=did_you_mean(text, known),
                )
            ]
        )
    return path


def _load_all() -> list[Mapping]:
    from archcomp.checkpoints.mapping import load_mapping

    return [load_mapping(p, display(p)) for p in shipped_mappings().values()]


def display(path: Path) -> str:
    """A path as messages show it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def by_model_type(model_type: Any, config_fits: Callable[[Mapping], str | None]) -> Mapping:
    """The shipped mapping for config.json's ``model_type``; ``config_fits`` returns why a
    candidate does not fit the config (None when it does), to choose among several."""
    mappings = _load_all()
    if not isinstance(model_type, str):
        raise UsageError(
            "config.json has no model_type string, so no mapping can be chosen; pass --mapping"
        )
    found = [m for m in mappings if m.model_type == model_type]
    if not found:
        known = sorted({m.model_type for m in mappings})
        # not "did you mean": a model_type is no typo, and the nearest name is often another
        # architecture (gpt_neo: gpt_neox; gemma3: gemma2); name a shipped variant of it only
        related = [
            k for k in known if k.startswith(model_type + "_") or model_type.startswith(k + "_")
        ]
        hint = (
            f"a related model_type ships: {', '.join(map(repr, related))}, for its own checkpoints"
        )
        raise UsageError(
            f"no shipped mapping reads model_type '{visible(model_type[:200])}'"
            + (f" ({hint})" if related else "")
            + f"; shipped: {', '.join(known)}. Write one (docs/checkpoints.md) and pass --mapping"
        )
    if len(found) == 1:
        return found[0]
    reasons = {m.file: config_fits(m) for m in found}
    fits = [m for m in found if reasons[m.file] is None]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise UsageError(
            f"no shipped mapping for model_type '{visible(model_type)}' fits this config.json: "
            + "; ".join(f"{f}: {why}" for f, why in reasons.items())
        )
    raise UsageError(
        f"several shipped mappings fit this {visible(model_type)} checkpoint ("
        + ", ".join(m.file for m in fits)
        + "); pass one with --mapping"
    )


def by_spec_name(name: str) -> Mapping:
    """The shipped mapping whose spec is called ``name`` (a model's ``spec['name']``)."""
    from archcomp.frontend.loader import load_program

    names = []
    for m in _load_all():
        spec_name = load_program(resolve_spec(m)).spec.name
        names.append(str(spec_name))
        if spec_name == name:
            return m
    hint = did_you_mean(name, names)
    raise UsageError(
        f"no shipped mapping serves the spec '{name}'"
        + (f" ({hint})" if hint else "")
        + f"; shipped mappings serve {', '.join(names)}. Pass one with --mapping"
    )
