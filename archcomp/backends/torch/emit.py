"""``--emit-python``: standalone PyTorch source equivalent to a compiled module (the "eject" path).

The emitted file needs only torch and the standard library. Its class builds the same
submodules under the same names (so it loads the same state_dict), with torch.nn classes for
torch.nn modules and the inlined source of archcomp's own modules (``archcomp.nn``); its
forward is the compiled module's fx code.
Constructor arguments are read back from each module and checked by rebuilding it on the meta
device and comparing parameters, buffers and ``extra_repr``.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import keyword
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from archcomp.backends.torch.literals import docstring, literal
from archcomp.backends.torch.module import CompiledBlock, class_name, tied_names
from archcomp.backends.torch.readable import indexable_lists
from archcomp.base.version import __version__

LITERALS = (bool, int, float, str, type(None))


class EmitError(Exception):
    """A module archcomp cannot write as standalone source."""


@dataclass
class _Emitter:
    model: nn.Module
    inlined: dict[str, str] = field(default_factory=dict)  # module name -> source
    aliases: list[str] = field(default_factory=list)
    blocks: dict[type, tuple[list[str], str]] = field(default_factory=dict)  # __init__, source
    globals: dict[str, Any] = field(default_factory=dict)  # of every forward

    # -- constructors ----------------------------------------------------------------------

    def class_ref(self, cls: type) -> str:
        if getattr(nn, cls.__name__, None) is cls:
            return f"nn.{cls.__name__}"
        mod = cls.__module__
        if mod.startswith("archcomp."):
            self.inline(mod)
            return cls.__name__
        if mod.startswith("torch"):
            return f"{mod}.{cls.__qualname__}"
        raise EmitError(f"cannot emit {cls.__module__}.{cls.__qualname__}: not torch or archcomp")

    def ctor(self, m: nn.Module) -> str:
        cls = type(m)
        ref = self.class_ref(cls)
        args, kwargs = _ctor_args(m)
        _verify(m, args, kwargs)
        parts = [literal(a) for a in args] + [f"{k}={literal(v)}" for k, v in kwargs.items()]
        return f"{ref}({', '.join(parts)})"

    def inline(self, modname: str) -> None:
        if modname in self.inlined:
            return
        if not modname.startswith("archcomp.nn"):
            raise EmitError(f"cannot inline {modname}: only archcomp.nn modules are standalone")
        mod = sys.modules[modname]  # loaded already: the model uses its classes
        source = inspect.getsource(mod)
        tree = ast.parse(source)
        drop: set[int] = set()
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.module:
                if stmt.module == "__future__" or stmt.module.startswith("archcomp"):
                    drop.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
                if stmt.module.startswith("archcomp"):
                    self.inline(stmt.module)
            elif isinstance(stmt, ast.Import) and any(
                a.name.startswith("archcomp") for a in stmt.names
            ):
                raise EmitError(f"{modname} imports an archcomp module by name; cannot inline it")
        lines = [line for i, line in enumerate(source.splitlines(), start=1) if i not in drop]
        self.inlined[modname] = f"# --- inlined from {modname} ---\n" + "\n".join(lines).strip()

    # -- the module tree ---------------------------------------------------------------------

    def children(self, expr: str, mod: nn.Module, depth: int) -> list[str]:
        lines: list[str] = []
        for name, p in mod._parameters.items():  # a node keyed by its id (key: self)
            if p is not None:
                shape = repr(tuple(int(d) for d in p.shape))  # (): a scalar
                grad = "" if p.requires_grad else ", requires_grad=False"
                made = f"nn.Parameter(torch.empty({shape}){grad})"
                if name.isidentifier():
                    lines.append(f"{expr}.{name} = {made}")
                else:  # a numbered node id: no attribute syntax for it
                    lines.append(f"{expr}.register_parameter({name!r}, {made})")
        for name, b in mod._buffers.items():  # a buffer node keyed by its id (key: self)
            if b is not None:
                lines.append(_buffer_line(expr, name, b, name in mod._non_persistent_buffers_set))
        for name, child in mod._modules.items():
            if child is None:
                continue
            if not name.isidentifier():  # a numbered node id (an nn.Sequential's child)
                var = f"item{depth}"
                lines.extend(self.element(var, child, depth + 1))
                lines.append(f"{expr}.add_module({name!r}, {var})")
                continue
            target = f"{expr}.{name}"
            if type(child) is nn.ModuleList:
                lines.extend(self.module_list(target, child, depth))
            elif isinstance(child, CompiledBlock):
                lines.append(f"{target} = {self.block(child)}()")
            elif type(child) is nn.Module:
                lines.append(f"{target} = nn.Module()")
                lines.extend(self.children(target, child, depth))
            else:
                lines.append(f"{target} = {self.ctor(child)}")
        return lines

    def element(self, var: str, child: nn.Module, depth: int) -> list[str]:
        if type(child) is nn.ModuleList:
            return self.module_list(var, child, depth)
        if isinstance(child, CompiledBlock):
            return [f"{var} = {self.block(child)}()"]
        if type(child) is nn.Module:
            return [f"{var} = nn.Module()", *self.children(var, child, depth + 1)]
        return [f"{var} = {self.ctor(child)}"]

    def module_list(self, target: str, ml: nn.ModuleList, depth: int) -> list[str]:
        var = "layer" if depth == 0 else f"layer{depth}"
        items = [(k, c) for k, c in ml._modules.items() if c is not None]
        bodies = [self.element(var, c, depth + 1) for _, c in items]
        lines = [f"{target} = nn.ModuleList()"]
        if [k for k, _ in items] != [str(i) for i in range(len(ml._modules))]:
            # a gap (a repeat whose copy 0 has no module): keep the compiled module's keys
            for (k, _), body in zip(items, bodies, strict=True):
                lines.extend(body)
                lines.append(f"{target}.add_module({k!r}, {var})")
            return lines
        if bodies and all(b == bodies[0] for b in bodies):
            if len(bodies) == 1:
                lines.extend(bodies[0])
                lines.append(f"{target}.append({var})")
            else:
                lines.append(f"for _ in range({len(bodies)}):")
                lines.extend("    " + b for b in bodies[0])
                lines.append(f"    {target}.append({var})")
            return lines
        for body in bodies:
            lines.extend(body)
            lines.append(f"{target}.append({var})")
        return lines

    def block(self, m: CompiledBlock) -> str:
        """The class of a repeated block's copy, written once; every copy must build alike.

        Returns a placeholder for the class's name: the name is chosen once the whole file is
        known, so that it cannot shadow anything the file defines or imports."""
        cls = type(m)
        init = self.children("self", m, 0)
        known = self.blocks.get(cls)
        token = f"\x00{id(cls)}\x00"
        if known is not None:
            if known[0] != init:
                raise EmitError(f"copies of {cls.__name__} differ in their submodules")
            return token
        code = cls.graph.python_code(root_module="self")
        self.add_globals(code.globals)
        body = "\n".join("        " + line for line in init) or "        pass"
        source = (
            f"class {token}(nn.Module):\n"
            f"    def __init__(self) -> None:\n        super().__init__()\n{body}\n\n"
            + _indent(code.src)
        )
        self.blocks[cls] = (init, source)
        return token

    def names(self, model_class: str) -> dict[str, str]:
        """Placeholder -> class name for each block class, and the model class's name, none of
        them a keyword, a builtin, or a name the file already binds (``F``, ``nn``, ...)."""
        # the file's own names too: TIED, the tuple its docstring's loading recipe reads
        taken = {"torch", "nn", "annotations", "TIED", *self.globals, *dir(builtins)}
        for source in self.inlined.values():
            taken |= _top_level_names(source)
        out: dict[str, str] = {}
        for cls in [*self.blocks, None]:
            want = model_class if cls is None else cls.__name__
            name = want
            while name in taken or keyword.iskeyword(name) or not name.isidentifier():
                name = f"{name}_" if name.isidentifier() else "Block"
            taken.add(name)
            out["" if cls is None else f"\x00{id(cls)}\x00"] = name
        return out

    def add_globals(self, names: dict[str, Any]) -> None:
        for name, obj in names.items():
            if self.globals.setdefault(name, obj) is not obj:
                raise EmitError(f"two forwards use the name {name!r} for different objects")

    # -- globals of the forward -------------------------------------------------------------

    def global_line(self, name: str, obj: Any) -> str | None:
        if obj is torch and name == "torch":
            return None
        if isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)):
            return f"{name} = float({str(obj)!r})"
        if inspect.ismodule(obj):
            if obj.__name__.split(".")[0] not in ("torch", *sys.stdlib_module_names):
                raise EmitError(f"the forward uses module {obj.__name__}")
            return f"import {obj.__name__} as {name}"
        mod = getattr(obj, "__module__", None) or ""
        qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if qual is None:
            raise EmitError(f"the forward uses {obj!r}, which has no importable name")
        if mod.startswith("archcomp."):
            self.inline(mod)
            return None if qual == name else f"{name} = {qual}"
        if obj is type(None):
            return f"{name} = type(None)"
        if mod == "builtins" and getattr(builtins, qual, None) is obj:
            return None if qual == name else f"{name} = {qual}"
        top = mod.split(".")[0]
        if top == "torch" or top in sys.stdlib_module_names:
            found: Any = sys.modules.get(mod)  # the module of a loaded object: never imported here
            try:
                for part in qual.split("."):
                    found = getattr(found, part)
            except AttributeError:
                found = None
            if found is obj:
                if mod == "torch":
                    return f"{name} = torch.{qual}"
                return f"from {mod} import {qual} as {name}"
            tname = getattr(obj, "__name__", "")
            if getattr(torch, tname, None) is obj:
                return f"{name} = torch.{tname}"
        raise EmitError(f"the forward uses {mod}.{qual}, which is neither torch nor archcomp")


def _is_literal(v: Any) -> bool:
    if isinstance(v, LITERALS):
        return True
    if isinstance(v, tuple | list):
        return all(_is_literal(x) for x in v)
    return False


def _signature(cls: type) -> inspect.Signature:
    """The constructor's signature; torch's RNNs take ``*args`` and pass them to RNNBase."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    if issubclass(cls, nn.RNNBase) and any(
        p.kind is p.VAR_POSITIONAL for p in sig.parameters.values()
    ):
        base = inspect.signature(nn.RNNBase.__init__)
        params = [p for n, p in base.parameters.items() if n != "mode"]
        if cls is nn.RNN:
            extra = inspect.Parameter(
                "nonlinearity", inspect.Parameter.KEYWORD_ONLY, default="tanh"
            )
            params.append(extra)
        sig = base.replace(parameters=params)
    return sig


def _ctor_args(m: nn.Module) -> tuple[list[Any], dict[str, Any]]:
    sig = _signature(type(m))
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    keyword_only = False
    for pname, p in list(sig.parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or pname in ("device", "dtype"):
            keyword_only = keyword_only or p.kind == p.VAR_POSITIONAL
            continue
        has_default = p.default is not p.empty
        if hasattr(m, pname):
            v = getattr(m, pname)
            if pname == "bias" and (v is None or isinstance(v, torch.Tensor)):
                v = v is not None
        elif pname == "bias":
            v = any(k.rsplit(".", 1)[-1] == "bias" for k, _ in m.named_parameters())
        elif has_default:
            continue
        else:
            raise EmitError(f"cannot read argument '{pname}' back from {type(m).__name__}")
        if not _is_literal(v):
            if has_default:
                continue
            raise EmitError(f"{type(m).__name__}.{pname} is not a literal: {v!r}")
        if has_default and _same(v, p.default):
            continue
        if not has_default and p.kind != p.KEYWORD_ONLY and not kwargs and not keyword_only:
            args.append(v)
        else:
            kwargs[pname] = v
    return args, kwargs


def _buffer_line(expr: str, name: str, b: torch.Tensor, non_persistent: bool) -> str:
    """``register_buffer`` of a module's own buffer (a ``buffer`` node with ``key: self``):
    zeros where the state dict gives its values (as every copy of a block builds alike), else
    filled with its one value (the node's ``init_value``)."""
    shape = repr(tuple(int(d) for d in b.shape))
    dtype = f"dtype=torch.{str(b.dtype).removeprefix('torch.')}"
    if not non_persistent:
        return f"{expr}.register_buffer({name!r}, torch.zeros({shape}, {dtype}))"
    if b.is_meta or b.numel() == 0 or not bool((b == b.flatten()[0]).all()):
        raise EmitError(f"{expr}.{name}: a buffer outside the state dict whose values differ")
    fill = f"torch.full({shape}, {literal(b.flatten()[0].item())}, {dtype})"
    return f"{expr}.register_buffer({name!r}, {fill}, persistent=False)"


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _verify(m: nn.Module, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Rebuild from the read-back arguments on meta; it must be the same module."""
    cls = type(m)
    extra = {"device": "meta"} if "device" in _signature(cls).parameters else {}
    try:
        copy = cls(*args, **kwargs, **extra)
    except Exception as exc:
        raise EmitError(f"cannot rebuild {cls.__name__} from {args} {kwargs}: {exc}") from exc

    def sig(mod: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
        out = [(n, tuple(t.shape)) for n, t in mod.named_parameters()]
        return out + [(n, tuple(t.shape)) for n, t in mod.named_buffers()]

    if sig(copy) != sig(m) or copy.extra_repr() != m.extra_repr():
        raise EmitError(
            f"{cls.__name__} rebuilt from {args} {kwargs} differs from the compiled one"
        )


def emit_python(model: nn.Module) -> str:
    """Standalone source of a class equivalent to ``model`` (an ArchModule)."""
    spec: dict[str, Any] = getattr(model, "spec", {}) or {}
    name = str(spec.get("name", "model"))
    em = _Emitter(model)
    init_lines = em.children("self", model, 0)
    lists = indexable_lists(model)
    for alias, source in tied_names(model).items():
        init_lines.append(f"{_expr(alias, lists)} = {_expr(source, lists)}  # tied")
    graph = model.graph
    if not isinstance(graph, torch.fx.Graph):
        raise EmitError("emit_python needs a module compiled by archcomp")
    code = graph.python_code(root_module="self")
    em.add_globals(code.globals)
    used = "\n".join([code.src, *init_lines, *em.inlined.values()])
    used += "\n".join(source for _, source in em.blocks.values())
    global_lines = [  # only the names the code uses (fx lists its pytree helpers always)
        line
        for gname, obj in em.globals.items()
        if re.search(rf"\b{re.escape(gname)}\b", used) and (line := em.global_line(gname, obj))
    ]
    tied = tuple(tied_names(model))
    names = em.names(class_name(name, "ArchModule"))
    cls_name = names.pop("")
    forward = _indent(code.src)
    desc = str(spec.get("description", "") or "").strip()
    # The module docstring is archcomp's own text (the class name is a checked identifier);
    # the spec's strings appear only as literals built by repr (see literals.py).
    header = [
        f'"""{cls_name}: standalone PyTorch source generated from an archcomp spec.',
        "",
        f"Generated by archcomp {__version__} (--emit-python); needs only torch and the "
        "standard library.",
        "It loads the same",
        "state_dict as the compiled module, e.g. from an artifact:",
        "",
        "    from safetensors.torch import load_file",
        f"    model = {cls_name}()",
        "    missing, unexpected = model.load_state_dict(load_file(path), strict=False)",
        "    assert not unexpected and set(missing) <= set(TIED)",
        "",
        "An artifact stores a tied weight once, under its first name; TIED lists the other",
        "names, which are missing from it and filled through the tie.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import torch",
        "from torch import nn",
    ]
    parts = ["\n".join(header)]
    parts.append(f"TIED = {tied!r}  # state-dict keys that alias another (tied weights)")
    parts.extend(em.inlined.values())
    if global_lines:
        parts.append("\n".join(global_lines))
    parts.extend(source for _, source in em.blocks.values())
    doc = f"    {docstring(desc)}\n\n" if desc else ""
    body = "\n".join("        " + line for line in init_lines) or "        pass"
    parts.append(
        f"class {cls_name}(nn.Module):\n{doc}"
        f"    def __init__(self) -> None:\n        super().__init__()\n{body}\n\n{forward}"
    )
    source = "\n\n\n".join(parts) + "\n"
    for token, block_name in names.items():
        source = source.replace(token, block_name)
    _check_literals(source, cls_name, desc)
    return source


def _check_literals(source: str, cls_name: str, desc: str) -> None:
    """The source parses (nothing is executed), and the spec's description came out as the
    class's docstring, exactly: the proof that it stayed a literal."""
    tree = ast.parse(source, f"<{cls_name}>")
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name), None)
    got = ast.get_docstring(cls, clean=False) if cls is not None else None
    if cls is None or (got or "") != desc:
        raise EmitError("the emitted source does not hold the spec's description as a literal")


def _indent(src: str) -> str:
    lines = src.strip().splitlines()  # fx's source ends in a line of spaces
    return "\n".join(("    " + line) if line.strip() else "" for line in lines)


def _expr(path: str, lists: frozenset[str]) -> str:
    out, at = "self", ""
    for part in path.split("."):
        if part.isidentifier():
            out = f"{out}.{part}"
        elif at in lists:
            out = f"{out}[{part}]"
        else:
            out = f"getattr({out}, {part!r})"
        at = f"{at}.{part}" if at else part
    return out


def _top_level_names(source: str) -> set[str]:
    """Names a module's top level binds: definitions, imports, assignments."""
    names: set[str] = set()
    for stmt in ast.parse(source).body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
        elif isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return names
