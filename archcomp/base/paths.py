"""One confinement rule for every path an untrusted file names.

A spec's import, a mapping's ``spec:``, a checkpoint's ``config.json``, weights, index and
shards: each is a path relative to the folder of the file that names it (or the folder the
user gave), and must stay inside that folder, lexically and with symlinks followed. Absolute
paths, ``~``, URLs, NUL characters and ``..`` that climb out are refused before anything is
opened; a symlink that leads out is refused too, so nothing outside the folder is read, and
no line of it is ever quoted in an error.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutsideFolder(ValueError):
    """A path that is not a relative path inside its folder; the message says why."""


def is_inside(target: Path, folder: Path, *, follow: bool = True) -> bool:
    """Whether ``target`` is ``folder`` or below it: lexically (``..`` normalized) and, with
    ``follow``, also once every symlink is resolved. ``os.path.realpath`` is used because,
    unlike ``Path.resolve``, it does not raise on a symlink loop (opening the file does)."""
    lexical = Path(os.path.normpath(target))
    try:
        lexical.relative_to(os.path.normpath(folder))
        if follow:
            Path(os.path.realpath(lexical)).relative_to(os.path.realpath(folder))
    except ValueError:
        return False
    return True


def confined(folder: Path, name: str) -> Path:
    """The path ``name`` names inside ``folder``; :class:`OutsideFolder` when it is absolute,
    starts with ``~``, is a URL, holds a NUL, or leads out of ``folder`` (symlinks followed)."""
    if "\x00" in name:
        raise OutsideFolder("the path holds a NUL character")
    if "://" in name or name.startswith(("/", "\\", "~")) or Path(name).is_absolute():
        raise OutsideFolder("not a path relative to its folder")
    target = Path(os.path.normpath(folder / name))
    if not is_inside(target, folder):
        raise OutsideFolder(f"leads out of {folder}")
    return target
