"""Front end, part 1: spec text -> pydantic :class:`Spec`, with imports resolved.

An import is a file by relative ``path`` (it must stay inside the importing spec's folder tree)
or a shipped block ``library`` by name (:mod:`archcomp.frontend.library`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.base.errors import Diagnostic, Location, Reporter, SpecError, did_you_mean
from archcomp.frontend.expr import type_name
from archcomp.frontend.library import SPECS_DIR, block_libraries
from archcomp.frontend.schema import BlockSpec, ImportSpec, Spec
from archcomp.frontend.source import SpecFileError, decode, load_yaml, read_spec_file

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
                hint = _type_hint(value)
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
    return did_you_mean(key, known) or (f"known: {', '.join(known)}" if known else None)


def _lower(msg: str) -> str:
    return msg[:1].lower() + msg[1:]


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _type_hint(v: Any) -> str | None:
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return "quoted numbers are strings; remove the quotes"
    if isinstance(v, str) and v.lower() in ("yes", "no", "on", "off", "y", "n"):
        return "YAML 1.2 reads this as a string; write true or false"
    if isinstance(v, bool):
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


def load_program(
    source: str | Path, *, text: str | None = None, base_dir: Path | None = None
) -> Program:
    """Load a spec (a path, or ``text`` with ``source`` as its display name) and its imports."""
    if text is not None:
        raw, doc = load_yaml(decode(text.encode("utf-8"), str(source)), str(source), None)
        root_dir = (base_dir or Path.cwd()).resolve()
    else:
        path = Path(source)
        raw, doc = read_spec_file(path, str(source))
        doc.path = path.resolve()
        root_dir = doc.path.parent
    spec = parse_document(raw, doc)
    prog = Program(spec, doc, raw, docs=[doc])
    rep = Reporter()
    _collect_blocks(prog, spec, doc, root_dir, [doc.path] if doc.path else [], rep, None)
    rep.raise_if_failed()
    return prog


def _collect_blocks(
    prog: Program,
    spec: Spec,
    doc: SourceDoc,
    root_dir: Path,
    stack: list[Path],
    rep: Reporter,
    only: list[str] | None,
    raw: Any = None,
) -> None:
    here = doc.path.parent if doc.path else root_dir
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
            ipath, what, sub_root = (
                ("imports", i, "library"),
                f"library '{item.library}'",
                SPECS_DIR,
            )
            target = _resolve_library(item.library, doc, ipath, rep)
        elif item.path is not None:
            ipath = ("imports", i, "path") if isinstance(imp, ImportSpec) else ("imports", i)
            what, sub_root = f"'{item.path}'", root_dir
            target = _resolve_import(item.path, here, root_dir, doc, ipath, rep)
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
            display = _display(target)
            sub_raw, sub_doc = read_spec_file(target, display)
            sub_doc.path = target
            sub = parse_document(sub_raw, sub_doc)
        except SpecError as exc:
            rep.extend(exc.diagnostics)
            continue
        except SpecFileError as exc:  # e.g. no permission: located at the import
            rep.add(doc.diag("import-unreadable", str(exc), ipath))
            continue
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
        _collect_blocks(prog, sub, sub_doc, sub_root, [*stack, target], rep, item.blocks, sub_raw)
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
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _resolve_import(
    text: str, here: Path, root_dir: Path, doc: SourceDoc, ipath: YamlPath, rep: Reporter
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
    target = (here / text).resolve()
    try:
        target.relative_to(root_dir)
    except ValueError:
        rep.add(
            doc.diag(
                "import-escape",
                f"import '{text}' leaves the spec's directory tree",
                ipath,
                hint=f"imports must stay inside {_display(root_dir)}",
            )
        )
        return None
    if not target.is_file():
        rep.add(doc.diag("import-not-found", f"imported file '{text}' does not exist", ipath))
        return None
    return target


def _resolve_library(name: str, doc: SourceDoc, ipath: YamlPath, rep: Reporter) -> Path | None:
    """The file of shipped block library ``name`` (looked up by name, never joined as a path)."""
    libraries = block_libraries()
    if name in libraries:
        return libraries[name]
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
