"""The spec library shipped inside the package: model specs by bare name, block libraries by name.

``archcomp check gpt2`` and ``archcomp.build("gpt2")`` name ``archcomp/specs/gpt2.yaml``;
``imports: [{library: gpt}]`` names ``archcomp/specs/blocks/gpt.yaml``. A name is only ever
looked up among the files listed here, never joined onto a path, so it cannot reach anything
outside the package's spec folder.
"""

from __future__ import annotations

from pathlib import Path

from archcomp.base.errors import UsageError, did_you_mean

SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"
BLOCKS_DIR = SPECS_DIR / "blocks"


def is_bare_name(text: str) -> bool:
    """A spec written without a slash or a dot (``gpt2``) names a shipped spec, never a file."""
    return bool(text) and not any(c in text for c in "/\\.")


def _stems(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.yaml")) if p.is_file()}


def model_specs() -> dict[str, Path]:
    """The shipped model specs by name (``gpt2`` -> ``.../archcomp/specs/gpt2.yaml``)."""
    return _stems(SPECS_DIR)


def block_libraries() -> dict[str, Path]:
    """The shipped block libraries by name (``gpt`` -> ``.../archcomp/specs/blocks/gpt.yaml``)."""
    return _stems(BLOCKS_DIR)


def shipped_spec(name: str) -> Path:
    """The file of shipped model spec ``name``; a :class:`UsageError` naming them if none."""
    specs = model_specs()
    if name in specs:
        return specs[name]
    hint = did_you_mean(name, specs)
    msg = f"no shipped spec named '{name}'" + (f" ({hint})" if hint else "")
    msg += f"; shipped: {', '.join(specs)} (archcomp specs describes them)"
    here = next((f for f in (name, f"{name}.yaml", f"{name}.yml") if Path(f).is_file()), None)
    if here is not None:
        msg += f"; to read the file '{here}' here, write it as a path: ./{here}"
    raise UsageError(msg)
