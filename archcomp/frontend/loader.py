"""Front end: a spec and its imports -> a :class:`Program` (the spec plus every block it
can use).

Documents are validated by :mod:`archcomp.frontend.validate`; files are found, read and
policed by :mod:`archcomp.frontend.files`. This module assembles them: it walks the imports,
keeps the blocks each import asks for (with the blocks they use) and reports import cycles,
unknown and duplicate blocks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.base.errors import Location, Reporter, SpecError, did_you_mean
from archcomp.frontend.files import MAX_FILES as MAX_FILES
from archcomp.frontend.files import (
    SpecFiles,
    file_error,
    resolve_import,
    resolve_library,
)
from archcomp.frontend.schema import BlockSpec, ImportSpec, Spec
from archcomp.frontend.source import SpecFileError, decode, load_yaml, read_spec_bytes
from archcomp.frontend.validate import parse_document as parse_document
from archcomp.frontend.validate import pydantic_diagnostics as pydantic_diagnostics

MAX_IMPORT_DEPTH = 16


@dataclass(frozen=True)
class BlockDef:
    """A block and where it was written."""

    name: str
    spec: BlockSpec
    doc: SourceDoc
    path: YamlPath
    raw: Any = None


@dataclass
class Program:
    """A parsed spec plus every block it can use (its own and imported ones)."""

    spec: Spec
    doc: SourceDoc
    raw: dict[str, Any]
    blocks: dict[str, BlockDef] = field(default_factory=dict)
    docs: list[SourceDoc] = field(default_factory=list)
    # every text read, by its path relative to the top-level spec's folder (POSIX), and the
    # top-level one's key: what an artifact stores to rebuild the spec exactly
    sources: dict[str, str] = field(default_factory=dict)
    main: str = ""

    def __repr__(self) -> str:
        nodes = len(self.spec.nodes or [])
        return (
            f"Program({self.spec.name or self.doc.file!r}: {nodes} nodes written, "
            f"{len(self.blocks)} blocks, from {self.doc.file!r})"
        )


def load_program(
    source: str | Path,
    *,
    text: str | None = None,
    base_dir: Path | None = None,
    embedded: Mapping[str, str] | None = None,
    label: str = "artifact",
) -> Program:
    """Load a spec (a path, or ``text`` with ``source`` as its display name) and its imports.

    With ``embedded`` (an artifact's sources: path relative to the spec's folder -> text),
    ``source`` is the key of the top-level file and imports are read from ``embedded`` alone,
    never from the disk; messages name them ``label[path]``."""
    if embedded is not None:
        raw, doc, spec, files, main = _read_embedded(source, embedded, label)
    elif text is not None:
        raw, doc = load_yaml(decode(text.encode("utf-8"), str(source)), str(source), None)
        spec = parse_document(raw, doc)
        files = SpecFiles((base_dir or Path.cwd()).resolve())
        main = str(source)
        files.texts[main] = text
    else:
        raw, doc, spec, files, main = _read_disk(Path(source), str(source))
    prog = Program(spec, doc, raw, docs=[doc], sources=files.texts, main=main)
    rep = Reporter()
    start = [doc.path] if doc.path else []
    _Collector(prog, files, rep).collect(spec, doc, start, None)
    rep.raise_if_failed()
    return prog


def _read_embedded(
    source: str | Path, embedded: Mapping[str, str], label: str
) -> tuple[Any, SourceDoc, Spec, SpecFiles, str]:
    """The top-level file of an artifact's sources, and the files it may import."""
    root_dir = Path("/archcomp-artifact")
    target = Path(os.path.normpath(root_dir / str(source)))
    files = SpecFiles(root_dir, embedded, label)
    try:
        target.relative_to(root_dir)
    except ValueError:
        raise file_error(
            label, "import-escape", "the top-level file is outside the sources"
        ) from None
    raw, doc, spec = files.read(target, files.display(target))
    return raw, doc, spec, files, files.key(target)


def _read_disk(path: Path, display: str) -> tuple[Any, SourceDoc, Spec, SpecFiles, str]:
    """The top-level spec file on disk, and the files it may import (its folder's)."""
    data = read_spec_bytes(path, display)
    main_text = decode(data, display)
    raw, doc = load_yaml(main_text, display, path)
    doc.path = path.resolve()
    spec = parse_document(raw, doc)
    files = SpecFiles(doc.path.parent)
    main = files.key(doc.path)
    files.texts[main] = main_text
    files.total = len(data)
    return raw, doc, spec, files, main


@dataclass(frozen=True)
class _Import:
    """One resolved import of a spec: the file, where it was written, what it names."""

    index: int
    item: ImportSpec
    path: YamlPath  # of the import's path or library value, for messages
    what: str  # "library 'gpt'" or "'blocks.yaml'"
    space: Path  # the folder the imported file's own imports must stay in
    target: Path


class _Collector:
    """Walks a program's imports depth first, adding each file's blocks to the program."""

    def __init__(self, prog: Program, files: SpecFiles, rep: Reporter) -> None:
        self.prog = prog
        self.files = files
        self.rep = rep
        # (file, blocks chosen) pairs collected already
        self.visited: set[tuple[Path, tuple[str, ...] | None]] = set()

    def collect(
        self,
        spec: Spec,
        doc: SourceDoc,
        stack: list[Path],
        only: list[str] | None,
        raw: Any = None,
        space: Path | None = None,
    ) -> None:
        """Collect the blocks of ``spec`` and of what it imports. ``space`` is the folder its
        path imports must stay in: the top-level spec's (:attr:`SpecFiles.root`), or the
        package's spec folder for a file reached through a library."""
        space = space or self.files.root
        for i, imp in enumerate(spec.imports):
            found = self._resolve(i, imp, doc, space)
            if found is not None:
                self._follow(found, doc, stack)
        self._add_blocks(spec, doc, only, raw)

    def _resolve(
        self, i: int, imp: str | ImportSpec, doc: SourceDoc, space: Path
    ) -> _Import | None:
        """The file import ``i`` names, or None (reported) when it names none."""
        item = imp if isinstance(imp, ImportSpec) else ImportSpec(path=imp)
        files, rep = self.files, self.rep
        if item.path is not None and item.library is not None:
            hint = "write one import for each"
            msg = "an import names a 'path' or a 'library', not both"
            rep.add(doc.diag("import-form", msg, ("imports", i), hint=hint))
            return None
        if item.library is not None:
            # A shipped library, and what it imports in turn, stays inside the package's specs.
            ipath: YamlPath = ("imports", i, "library")
            what, sub_space = f"library '{item.library}'", files.library
            target = resolve_library(item.library, files, doc, ipath, rep)
        elif item.path is not None:
            ipath = ("imports", i, "path") if isinstance(imp, ImportSpec) else ("imports", i)
            what, sub_space = f"'{item.path}'", space
            here = doc.path.parent if doc.path else files.root
            target = resolve_import(item.path, here, files, space, doc, ipath, rep)
        else:
            msg = (
                "an import needs a 'path' (a file relative to this spec) or a 'library' "
                "(a block library shipped with archcomp)"
            )
            rep.add(doc.diag("import-form", msg, ("imports", i)))
            return None
        return None if target is None else _Import(i, item, ipath, what, sub_space, target)

    def _follow(self, imp: _Import, doc: SourceDoc, stack: list[Path]) -> None:
        """Read an imported file and collect its blocks, unless it closes a cycle, nests too
        deep, fails to read, or was collected with the same choice of blocks already."""
        target, rep = imp.target, self.rep
        if target in stack:
            chain = " -> ".join(p.name for p in [*stack[stack.index(target) :], target])
            rep.add(doc.diag("import-cycle", f"import cycle: {chain}", imp.path))
            return
        if len(stack) >= MAX_IMPORT_DEPTH:
            msg = f"imports nest deeper than {MAX_IMPORT_DEPTH}"
            rep.add(doc.diag("import-too-deep", msg, imp.path))
            return
        try:
            display = self.files.display(target, imp.space)
            sub_raw, sub_doc, sub = self.files.read(target, display, imp.space)
        except SpecError as exc:
            rep.absorb(exc)
            return
        except SpecFileError as exc:  # e.g. no permission: located at the import
            rep.add(doc.diag("import-unreadable", str(exc), imp.path))
            return
        if sub_doc not in self.prog.docs:
            self.prog.docs.append(sub_doc)
        chosen = imp.item.blocks
        for j, name in enumerate(chosen or ()):
            if name not in sub.blocks:
                rep.add(
                    doc.diag(
                        "unknown-block",
                        f"{imp.what} has no block '{name}'",
                        ("imports", imp.index, "blocks", j),
                        hint=did_you_mean(name, sub.blocks),
                    )
                )
        seen = (target, tuple(chosen) if chosen is not None else None)
        if seen in self.visited:
            return  # this file, with this choice of blocks, was collected already
        self.visited.add(seen)
        self.collect(sub, sub_doc, [*stack, target], chosen, sub_raw, imp.space)

    def _add_blocks(self, spec: Spec, doc: SourceDoc, only: list[str] | None, raw: Any) -> None:
        """Add the blocks of ``spec`` (those in ``only`` and what they use) to the program."""
        prog = self.prog
        wanted = _with_dependencies(spec, only) if only is not None else None
        for name, block in spec.blocks.items():
            if wanted is not None and name not in wanted:
                continue
            prev = prog.blocks.get(name)
            if prev is not None:
                if prev.doc.path == doc.path and prev.path == ("blocks", name):
                    continue  # the same block reached through two imports
                self.rep.add(
                    doc.diag(
                        "duplicate-block",
                        f"block '{name}' is defined twice",
                        ("blocks", name),
                        key=True,
                        related=(prev.doc.loc(prev.path, key=True),),
                    )
                )
                continue
            block_raw = (raw if raw is not None else prog.raw)["blocks"][name]
            prog.blocks[name] = BlockDef(name, block, doc, ("blocks", name), block_raw)


def _with_dependencies(spec: Spec, names: list[str]) -> set[str]:
    """The named blocks plus every block of the same file they use, directly or not."""
    wanted = set(names)
    todo = list(names)
    while todo:
        block = spec.blocks.get(todo.pop())
        for node in block.nodes if block is not None else ():
            if node.op in spec.blocks and node.op not in wanted:
                wanted.add(node.op)
                todo.append(node.op)
    return wanted


def location_of(doc: SourceDoc, path: YamlPath) -> Location:
    return doc.loc(path)
