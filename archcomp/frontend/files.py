"""Front end: where a spec's files come from and which it may read.

An import is a file by relative ``path`` (it must stay inside the importing spec's folder tree)
or a shipped block ``library`` by name (:mod:`archcomp.frontend.library`). On disk each file is
read once, within :data:`MAX_FILES` files and :data:`MAX_TOTAL_BYTES` bytes in all; from an
artifact, imports come from its embedded sources alone.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.base.errors import Diagnostic, Location, Reporter, SpecError, did_you_mean
from archcomp.base.paths import is_inside
from archcomp.frontend.library import SPECS_DIR, block_libraries
from archcomp.frontend.schema import Spec
from archcomp.frontend.source import decode, load_yaml, read_spec_bytes
from archcomp.frontend.validate import parse_document

MAX_FILES = 256  # distinct files one spec may read, itself and every import
MAX_TOTAL_BYTES = 32 << 20  # their text together
EMBEDDED_LIBRARY = Path("/archcomp-library")  # where an artifact's library sources "are"
LIBRARY_KEY = "/archcomp/specs/"  # how they are named among the sources


class SpecFiles:
    """Where a program's files come from: the disk, inside the top-level spec's folder, or
    the sources embedded in an artifact (which never reach the disk).

    Each file is read and parsed once however often it is imported (a diamond of imports is
    linear, not exponential); :attr:`texts` keeps every text read, by its path relative to
    the root, so that an artifact can store the spec exactly."""

    def __init__(
        self, root: Path, embedded: Mapping[str, str] | None = None, label: str = "artifact"
    ):
        self.root = root
        self.embedded = embedded
        # Shipped block libraries (``imports: [{library: gpt}]``) and what they import stay in
        # the package's spec folder; in an artifact they are among its sources too.
        # A Path object of its own: a file was reached through a library when its ``space``
        # *is* this object, even where the root is the library's folder too (a shipped spec
        # that imports a library), so its key does not depend on where the spec lies.
        self.library = Path(EMBEDDED_LIBRARY if embedded is not None else SPECS_DIR)
        self.label = label  # embedded files show as "label[path]" in messages
        self.texts: dict[str, str] = {}
        self.parsed: dict[str, tuple[Any, SourceDoc, Spec] | SpecError] = {}  # by key
        self.total = 0

    def key(self, target: Path, space: Path | None = None) -> str:
        """A file's name among the sources: its path relative to the root, or, for a file
        reached through a shipped library (``space`` is :attr:`library`), ``/archcomp/specs/``
        and its path there (absolute, so it cannot be the name of a user's file)."""
        if space is self.library:
            return LIBRARY_KEY + target.relative_to(self.library).as_posix()
        return target.relative_to(self.root).as_posix()

    def library_file(self, name: str) -> Path | None:
        """The file of shipped block library ``name``, if there is one."""
        if self.embedded is None:
            return block_libraries().get(name)
        target = self.library / "blocks" / f"{name}.yaml"
        return target if self.key(target, self.library) in self.embedded else None

    def locate(self, text: str, here: Path, root: Path) -> Path | str:
        """The file an import names, or "escape" when it leaves ``root`` (the spec's folder, or
        the library folder for a file reached through a library).

        Paths are normalized lexically in both modes, so a file's key is the same on disk and
        in an artifact; on disk the real path (symlinks followed) must stay inside too."""
        target = Path(os.path.normpath(here / text))
        if not is_inside(target, root, follow=self.embedded is None):
            return "escape"
        return target

    def display(self, target: Path, space: Path | None = None) -> str:
        if self.embedded is not None:
            return f"{self.label}[{self.key(target, space)}]"
        return display_path(target)

    def read(
        self, target: Path, display: str, space: Path | None = None
    ) -> tuple[Any, SourceDoc, Spec]:
        """Read and parse a file once; later calls get the same result (or the same error)."""
        name = self.key(target, space)
        known = self.parsed.get(name)
        if isinstance(known, SpecError):
            raise SpecError([])  # reported where it was first read
        if known is not None:
            return known
        try:
            if len(self.parsed) >= MAX_FILES:
                raise file_error(
                    display, "too-many-files", f"the spec reads more than {MAX_FILES} files"
                )
            if self.embedded is not None:
                text = self.embedded.get(name)
                if text is None:
                    raise file_error(display, "import-not-found", "the file is not in the artifact")
                data = text.encode("utf-8")
            else:
                data = read_spec_bytes(target, display)
            self.total += len(data)
            if self.total > MAX_TOTAL_BYTES:
                raise file_error(
                    display,
                    "spec-too-large",
                    f"the spec and its imports hold over {MAX_TOTAL_BYTES:,} bytes",
                )
            text = decode(data, display)
            raw, doc = load_yaml(text, display, target)
            doc.path = target
            result = (raw, doc, parse_document(raw, doc))
        except SpecError as exc:
            self.parsed[name] = exc
            raise
        self.texts[name] = text
        self.parsed[name] = result
        return result


def file_error(file: str, code: str, message: str) -> SpecError:
    return SpecError([Diagnostic(code, message, Location(file, 1, 1))])


def display_path(path: Path) -> str:
    """``path`` relative to the working folder when inside it (the folder itself in full:
    "inside ." tells a reader nothing)."""
    try:
        rel = path.relative_to(Path.cwd().resolve())
    except ValueError:
        return str(path)
    return str(rel) if rel.parts else str(path)


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def resolve_import(
    text: str,
    here: Path,
    files: SpecFiles,
    space: Path,
    doc: SourceDoc,
    ipath: YamlPath,
    rep: Reporter,
) -> Path | None:
    """The file the path import ``text`` (written in a file in ``here``) names, inside
    ``space``; None when it names none that may be read (reported at ``ipath``)."""
    problem = _path_problem(text)
    target = None
    if problem is None:
        target = files.locate(text, here, space)
        if isinstance(target, str):
            problem = (
                "import-escape",
                f"import '{text}' leaves the spec's directory tree",
                f"imports must stay inside {display_path(space)}",
            )
        elif files.embedded is not None:
            if files.key(target, space) not in files.embedded:
                what = f"imported file '{text}' is not among the artifact's sources"
                problem = ("import-not-found", what, None)
        else:
            problem = _file_problem(text, target)
    if problem is not None:
        code, message, hint = problem
        rep.add(doc.diag(code, message, ipath, hint=hint))
        return None
    assert isinstance(target, Path)
    return target


_Problem = tuple[str, str, str | None]  # code, message, hint


def _path_problem(text: str) -> _Problem | None:
    """What is wrong with an import's text before it is looked up: a URL, an absolute path, a
    control character."""
    if "://" in text or text.startswith(("//", "\\\\")):
        return (
            "import-url",
            f"import '{text}' is a URL; imports are relative file paths",
            "copy the file next to the spec and import it by relative path",
        )
    if text.startswith(("/", "\\", "~")) or (len(text) > 1 and text[1] == ":"):
        return (
            "import-absolute",
            f"import '{text}' is an absolute path",
            "imports are relative to the importing spec",
        )
    if _UNPRINTABLE.search(text):
        return ("import-bad-path", "the import path holds a control character", None)
    return None


def _file_problem(text: str, target: Path) -> _Problem | None:
    """What is wrong with an imported file on disk: missing, unreadable, not a regular file."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return ("import-not-found", f"imported file '{text}' does not exist", None)
    except OSError as exc:  # a symlink loop, a name too long: say why, at the import
        return ("import-unreadable", f"cannot read import '{text}': {exc.strerror}", None)
    if not stat.S_ISREG(mode):
        return ("import-not-a-file", f"import '{text}' is not a regular file", None)
    return None


def resolve_library(
    name: str, files: SpecFiles, doc: SourceDoc, ipath: YamlPath, rep: Reporter
) -> Path | None:
    """The file of shipped block library ``name`` (looked up by name, never joined as a path)."""
    target = files.library_file(name)
    if target is not None:
        return target
    libraries = block_libraries()
    close = did_you_mean(name, libraries)
    rep.add(
        doc.diag(
            "unknown-library",
            f"no block library named '{name}' ships with archcomp",
            ipath,
            hint=(f"{close} " if close else "") + f"shipped libraries: {', '.join(libraries)}",
        )
    )
    return None
