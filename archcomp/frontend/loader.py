"""Front end, part 1: spec text -> pydantic :class:`Spec`, with imports resolved.

An import is a file by relative ``path`` (it must stay inside the importing spec's folder tree)
or a shipped block ``library`` by name (:mod:`archcomp.frontend.library`).
"""

from __future__ import annotations

import os
import re
import stat
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.base.errors import (
    Diagnostic,
    Location,
    Reporter,
    SpecError,
    did_you_mean,
    listing,
)
from archcomp.base.paths import is_inside
from archcomp.frontend.expr import type_name
from archcomp.frontend.library import SPECS_DIR, block_libraries
from archcomp.frontend.schema import BlockSpec, ImportSpec, Spec
from archcomp.frontend.source import SpecFileError, decode, load_yaml, read_spec_bytes

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


_TYPE_WORDS = {
    "int_type": "an int",
    "float_type": "a float",
    "bool_type": "a bool",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "literal_error": None,
    "int_from_float": "an int",
}


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Known keys of the mapping at loc (for 'did you mean'), walking the model annotations."""
    tp: Any = model
    for step in loc:
        tp = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = next((f for n, f in tp.model_fields.items() if (f.alias or n) == step), None)
            if f is None:
                return []
            tp = f.annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def _strip(tp: Any) -> Any:
    """The model (or container) inside Optional/Union/Annotated wrappers."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is typing.Union:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            conts = [a for a in args if typing.get_origin(a) in (list, dict)]
            tp = models[0] if models else (conts[0] if conts else args[0])
        else:
            return tp


def pydantic_diagnostics(
    exc: ValidationError,
    doc: SourceDoc,
    base: YamlPath,
    model: Any,
    raw: Any,
    node: str | None = None,
    op: str | None = None,
) -> list[Diagnostic]:
    """Turn pydantic errors into located diagnostics, one per offending value."""
    grouped: dict[YamlPath, list[Any]] = {}
    for err in exc.errors():
        grouped.setdefault(_real_path(raw, err), []).append(err)
    # A value that fits no member of a union errs once per member; keep the member that got
    # furthest (the deepest path) and drop the plain type mismatches of the others.
    for path in list(grouped):
        deeper = any(len(p) > len(path) and p[: len(path)] == path for p in grouped)
        if deeper and all(e["type"] in _TYPE_WORDS for e in grouped[path]):
            del grouped[path]
    out: list[Diagnostic] = []
    for path, errs in grouped.items():
        full = (*base, *path)
        key = path[-1] if path else None
        kinds = {e["type"] for e in errs}
        value = _get(raw, path)
        if "extra_forbidden" in kinds:
            where = f"for op '{op}'" if op else "here"
            noun = "argument" if op else "key"
            known = _fields_at(model, path[:-1])
            out.append(
                doc.diag(
                    "unknown-key",
                    f"unknown {noun} '{key}' {where}",
                    full,
                    key=True,
                    node=node,
                    op=op,
                    hint=_unknown_key_hint(str(key), value, known),
                )
            )
        elif "missing" in kinds:
            noun = "argument" if op else "key"
            parent = _get(raw, path[:-1])
            glued = (
                [k for k in parent if str(k).startswith(f"{key}:")]
                if isinstance(parent, dict)
                else []
            )
            out.append(
                doc.diag(
                    "missing-key",
                    f"missing required {noun} '{key}'",
                    (*full[:-1], glued[0]) if glued else full[:-1],
                    key=True,
                    node=node,
                    op=op,
                    hint=_unknown_key_hint(glued[0], None, []) if glued else None,
                )
            )
        else:
            wanted = []
            for e in errs:
                word = _TYPE_WORDS.get(e["type"], "")
                if e["type"] == "literal_error":
                    word = str((e.get("ctx") or {}).get("expected", ""))
                if word:
                    wanted.append(word)
            if wanted and all(e["type"] in _TYPE_WORDS for e in errs):
                want = " or ".join(dict.fromkeys(wanted))
                msg = f"expected {want}, found {type_name(value)} {_show(value)}"
                hint = _type_hint(value, wanted)
            else:
                e = next((e for e in errs if e["type"] not in _TYPE_WORDS), errs[0])
                msg = f"{_lower(e['msg'])}, found {_show(value)}"
                hint = None
                if e["type"] == "too_short":
                    n = (e.get("ctx") or {}).get("min_length", 1)
                    noun = "entry" if n == 1 else "entries"
                    msg = f"needs at least {n} {noun}, found {_show(value)}"
                pattern = str((e.get("ctx") or {}).get("pattern", ""))
                if e["type"] == "string_pattern_mismatch" and pattern.startswith("^[A-Za-z_]"):
                    msg = (
                        "expected a name (letters, digits, _; not starting with a digit), "
                        f"found {_show(value)}"
                    )
                    if "\\." in pattern:
                        msg = (
                            "expected a reference like 'node' or 'node.result', "
                            f"found {_show(value)}"
                        )
                elif e["type"] == "string_pattern_mismatch" and "\\$" in pattern:
                    want = " or ".join(dict.fromkeys(w for w in wanted)) or "a value"
                    msg = f"expected {want} or a ${{...}} expression, found {_show(value)}"
            label = f"'{key}': " if isinstance(key, str) else ""
            out.append(doc.diag("invalid-value", label + msg, full, node=node, op=op, hint=hint))
    return out


def _real_path(raw: Any, err: Any) -> YamlPath:
    """The error's location as a path in the document, without pydantic's union-member tags."""
    steps: list[Any] = []
    cur = raw
    loc = err["loc"]
    for i, item in enumerate(loc):
        in_map = isinstance(cur, dict) and item in cur
        in_list = isinstance(cur, list) and isinstance(item, int) and 0 <= item < len(cur)
        if in_map or in_list:
            steps.append(item)
            cur = cur[item]
        elif i == len(loc) - 1 and err["type"] == "missing" and isinstance(cur, dict):
            steps.append(item)
        # else: a union member's tag ("InputDecl", "list[...]"): not part of the document
    return tuple(steps)


def _unknown_key_hint(key: str, value: Any, known: list[str]) -> str | None:
    name, colon, rest = key.partition(":")
    if colon and rest and not rest.startswith(" "):
        return f"put a space after the colon: '{name}: {rest}'"
    if value is None and ("," in key or " " in key.strip()):
        return "inside {...} an unquoted comma ends a value; quote the value that holds it"
    return did_you_mean(key, known) or (f"known: {listing(known)}" if known else None)


def _lower(msg: str) -> str:
    return msg[:1].lower() + msg[1:]


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _type_hint(v: Any, wanted: list[str]) -> str | None:
    """A hint for a value of the wrong type, given the type words that were ``wanted``."""
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return "quoted numbers are strings; remove the quotes"
    if isinstance(v, str) and v.lower() in ("yes", "no", "on", "off", "y", "n"):
        return "YAML 1.2 reads this as a string; write true or false"
    if isinstance(v, bool) and "a mapping" in wanted:
        return "this takes a mapping of settings: {} for their defaults"
    if isinstance(v, bool) and ("an int" in wanted or "a float" in wanted):
        return "a bool is not a number here"
    return None


def _has(raw: Any, path: tuple[Any, ...]) -> bool:
    try:
        _get(raw, path, strict=True)
        return True
    except (KeyError, IndexError, TypeError):
        return False


def _get(raw: Any, path: tuple[Any, ...] | list[Any], strict: bool = False) -> Any:
    cur = raw
    for p in path:
        try:
            cur = cur[p]
        except (KeyError, IndexError, TypeError):
            if strict:
                raise
            return None
    return cur


def parse_document(raw: Any, doc: SourceDoc) -> Spec:
    """Validate a loaded document against the :class:`Spec` model."""
    if not isinstance(raw, dict):
        raise SpecError(
            [doc.diag("not-a-mapping", f"a spec is a mapping of keys, found {type_name(raw)}", ())]
        )
    if "archcomp" not in raw:
        raise SpecError(
            [
                doc.diag(
                    "missing-version",
                    "missing the format version key 'archcomp'",
                    (),
                    hint="start the spec with 'archcomp: 1'",
                )
            ]
        )
    if raw["archcomp"] != 1 or isinstance(raw["archcomp"], bool):
        raise SpecError(
            [
                doc.diag(
                    "unsupported-version",
                    f"format version {raw['archcomp']!r} is not supported",
                    ("archcomp",),
                    hint="this archcomp reads 'archcomp: 1'",
                )
            ]
        )
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(pydantic_diagnostics(exc, doc, (), Spec, raw)) from None


MAX_FILES = 256  # distinct files one spec may read, itself and every import
MAX_TOTAL_BYTES = 32 << 20  # their text together
EMBEDDED_LIBRARY = Path("/archcomp-library")  # where an artifact's library sources "are"
LIBRARY_KEY = "/archcomp/specs/"  # how they are named among the sources


class _Files:
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
        return _display(target)

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
                raise _fail(
                    display, "too-many-files", f"the spec reads more than {MAX_FILES} files"
                )
            if self.embedded is not None:
                text = self.embedded.get(name)
                if text is None:
                    raise _fail(display, "import-not-found", "the file is not in the artifact")
                data = text.encode("utf-8")
            else:
                data = read_spec_bytes(target, display)
            self.total += len(data)
            if self.total > MAX_TOTAL_BYTES:
                raise _fail(
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


def _fail(file: str, code: str, message: str) -> SpecError:
    return SpecError([Diagnostic(code, message, Location(file, 1, 1))])


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
        root_dir = Path("/archcomp-artifact")
        target = Path(os.path.normpath(root_dir / str(source)))
        files = _Files(root_dir, embedded, label)
        try:
            target.relative_to(root_dir)
        except ValueError:
            raise _fail(
                label, "import-escape", "the top-level file is outside the sources"
            ) from None
        raw, doc, spec = files.read(target, files.display(target))
        main = files.key(target)
    elif text is not None:
        raw, doc = load_yaml(decode(text.encode("utf-8"), str(source)), str(source), None)
        spec = parse_document(raw, doc)
        files = _Files((base_dir or Path.cwd()).resolve())
        main = str(source)
        files.texts[main] = text
    else:
        path = Path(source)
        data = read_spec_bytes(path, str(source))
        main_text = decode(data, str(source))
        raw, doc = load_yaml(main_text, str(source), path)
        doc.path = path.resolve()
        spec = parse_document(raw, doc)
        files = _Files(doc.path.parent)
        main = files.key(doc.path)
        files.texts[main] = main_text
        files.total = len(data)
    prog = Program(spec, doc, raw, docs=[doc], sources=files.texts, main=main)
    rep = Reporter()
    visited: set[tuple[Path, tuple[str, ...] | None]] = set()
    start = [doc.path] if doc.path else []
    _collect_blocks(prog, spec, doc, files, start, rep, None, visited=visited)
    rep.raise_if_failed()
    return prog


def _collect_blocks(
    prog: Program,
    spec: Spec,
    doc: SourceDoc,
    files: _Files,
    stack: list[Path],
    rep: Reporter,
    only: list[str] | None,
    raw: Any = None,
    *,
    visited: set[tuple[Path, tuple[str, ...] | None]],
    space: Path | None = None,
) -> None:
    """Collect the blocks of ``spec`` and of what it imports. ``space`` is the folder its path
    imports must stay in: the top-level spec's (:attr:`_Files.root`), or the package's spec
    folder for a file reached through a library."""
    space = space or files.root
    here = doc.path.parent if doc.path else files.root
    for i, imp in enumerate(spec.imports):
        item = imp if isinstance(imp, ImportSpec) else ImportSpec(path=imp)
        ipath: YamlPath
        if item.path is not None and item.library is not None:
            rep.add(
                doc.diag(
                    "import-form",
                    "an import names a 'path' or a 'library', not both",
                    ("imports", i),
                    hint="write one import for each",
                )
            )
            continue
        if item.library is not None:
            # A shipped library, and what it imports in turn, stays inside the package's specs.
            ipath, what = ("imports", i, "library"), f"library '{item.library}'"
            sub_space = files.library
            target = _resolve_library(item.library, files, doc, ipath, rep)
        elif item.path is not None:
            ipath = ("imports", i, "path") if isinstance(imp, ImportSpec) else ("imports", i)
            what, sub_space = f"'{item.path}'", space
            target = _resolve_import(item.path, here, files, space, doc, ipath, rep)
        else:
            rep.add(
                doc.diag(
                    "import-form",
                    "an import needs a 'path' (a file relative to this spec) or a 'library' "
                    "(a block library shipped with archcomp)",
                    ("imports", i),
                )
            )
            continue
        if target is None:
            continue
        if target in stack:
            chain = " -> ".join(p.name for p in [*stack[stack.index(target) :], target])
            rep.add(doc.diag("import-cycle", f"import cycle: {chain}", ipath))
            continue
        if len(stack) >= MAX_IMPORT_DEPTH:
            rep.add(
                doc.diag("import-too-deep", f"imports nest deeper than {MAX_IMPORT_DEPTH}", ipath)
            )
            continue
        try:
            sub_raw, sub_doc, sub = files.read(target, files.display(target, sub_space), sub_space)
        except SpecError as exc:
            rep.absorb(exc)
            continue
        except SpecFileError as exc:  # e.g. no permission: located at the import
            rep.add(doc.diag("import-unreadable", str(exc), ipath))
            continue
        if sub_doc not in prog.docs:
            prog.docs.append(sub_doc)
        if item.blocks:
            for j, name in enumerate(item.blocks):
                if name not in sub.blocks:
                    rep.add(
                        doc.diag(
                            "unknown-block",
                            f"{what} has no block '{name}'",
                            ("imports", i, "blocks", j),
                            hint=did_you_mean(name, sub.blocks),
                        )
                    )
        seen = (target, tuple(item.blocks) if item.blocks is not None else None)
        if seen in visited:
            continue  # this file, with this choice of blocks, was collected already
        visited.add(seen)
        _collect_blocks(
            prog,
            sub,
            sub_doc,
            files,
            [*stack, target],
            rep,
            item.blocks,
            sub_raw,
            visited=visited,
            space=sub_space,
        )
    wanted = _with_dependencies(spec, only) if only is not None else None
    for name, block in spec.blocks.items():
        if wanted is not None and name not in wanted:
            continue
        prev = prog.blocks.get(name)
        if prev is not None:
            if prev.doc.path == doc.path and prev.path == ("blocks", name):
                continue  # the same block reached through two imports
            rep.add(
                doc.diag(
                    "duplicate-block",
                    f"block '{name}' is defined twice",
                    ("blocks", name),
                    key=True,
                    related=(prev.doc.loc(prev.path, key=True),),
                )
            )
            continue
        prog.blocks[name] = BlockDef(
            name,
            block,
            doc,
            ("blocks", name),
            (raw if raw is not None else prog.raw)["blocks"][name],
        )


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


def _display(path: Path) -> str:
    """``path`` relative to the working folder when inside it (the folder itself in full:
    "inside ." tells a reader nothing)."""
    try:
        rel = path.relative_to(Path.cwd().resolve())
    except ValueError:
        return str(path)
    return str(rel) if rel.parts else str(path)


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def _resolve_import(
    text: str,
    here: Path,
    files: _Files,
    space: Path,
    doc: SourceDoc,
    ipath: YamlPath,
    rep: Reporter,
) -> Path | None:
    if "://" in text or text.startswith(("//", "\\\\")):
        rep.add(
            doc.diag(
                "import-url",
                f"import '{text}' is a URL; imports are relative file paths",
                ipath,
                hint="copy the file next to the spec and import it by relative path",
            )
        )
        return None
    if text.startswith(("/", "\\", "~")) or (len(text) > 1 and text[1] == ":"):
        rep.add(
            doc.diag(
                "import-absolute",
                f"import '{text}' is an absolute path",
                ipath,
                hint="imports are relative to the importing spec",
            )
        )
        return None
    if _UNPRINTABLE.search(text):
        rep.add(doc.diag("import-bad-path", "the import path holds a control character", ipath))
        return None
    target = files.locate(text, here, space)
    if isinstance(target, str):
        rep.add(
            doc.diag(
                "import-escape",
                f"import '{text}' leaves the spec's directory tree",
                ipath,
                hint=f"imports must stay inside {_display(space)}",
            )
        )
        return None
    if files.embedded is not None:
        if files.key(target, space) not in files.embedded:
            rep.add(
                doc.diag(
                    "import-not-found",
                    f"imported file '{text}' is not among the artifact's sources",
                    ipath,
                )
            )
            return None
        return target
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        rep.add(doc.diag("import-not-found", f"imported file '{text}' does not exist", ipath))
        return None
    except OSError as exc:  # a symlink loop, a name too long: say why, at the import
        why = f"cannot read import '{text}': {exc.strerror}"
        rep.add(doc.diag("import-unreadable", why, ipath))
        return None
    if not stat.S_ISREG(mode):
        rep.add(doc.diag("import-not-a-file", f"import '{text}' is not a regular file", ipath))
        return None
    return target


def _resolve_library(
    name: str, files: _Files, doc: SourceDoc, ipath: YamlPath, rep: Reporter
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


def location_of(doc: SourceDoc, path: YamlPath) -> Location:
    return doc.loc(path)
