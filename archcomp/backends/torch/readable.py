"""fx's generated forward as a person writes it: the spec's input names as parameters, a
docstring, each node's output shape as a comment (nanoGPT's ``# (B, T, C)``), and fx's
spellings rewritten by pattern (``x[:, -1]`` for ``x[(slice(None, None, None), -1)]``,
``self.h_[0]`` for ``getattr(self.h_, "0")``, ``torch.nn.functional.f`` for
``torch._C._nn.f``). Only the text changes, never what runs."""

from __future__ import annotations

import functools
import re
from typing import Any

from torch import fx, nn

from archcomp.backends.torch.handoff import hand_over, prologue
from archcomp.backends.torch.literals import comment, docstring
from archcomp.ir.dims import Dim, Shape


def fmt_shape_comment(shape: Shape) -> str:
    """``(B, S, 512)``: nanoGPT's shape-comment style."""
    return _shape_comment(shape) if isinstance(shape, tuple) else _fmt_shape(shape)


@functools.lru_cache(maxsize=4096)  # a model has few distinct shapes, written once per node
def _shape_comment(shape: Shape) -> str:
    return _fmt_shape(shape)


def _fmt_shape(shape: Shape) -> str:
    def one(d: Dim) -> str:
        s = str(d)
        return f"({s})" if not isinstance(d, int) and " " in s else s

    inner = ", ".join(one(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


class ArchCodeGen(fx.graph.CodeGen):
    """fx code generation with the spec's input names, a docstring, and shape comments."""

    def __init__(
        self,
        input_names: tuple[str, ...],
        doc: str,
        lists: frozenset[str] = frozenset(),
        blocks: frozenset[str] = frozenset(),
        block: bool = False,
    ) -> None:
        super().__init__()
        self.input_names = input_names
        self.doc = doc
        self.lists = lists  # ModuleLists (dotted paths) that ``self.h_[0]`` may index
        self.blocks = blocks  # block instances (dotted paths): handed their dying inputs
        self.block = block  # a block's forward: takes handed-over inputs

    def gen_fn_def(
        self, free_vars: list[str], maybe_return_annotation: str, *, expanded_def: bool = False
    ) -> str:
        fx_names = [v for v in free_vars if v != "self"]
        # fx renames a placeholder that would shadow a builtin (``input`` -> ``input_1``);
        # the signature keeps the spec's name and binds the fx name to it.
        params = list(self.input_names) if len(fx_names) == len(self.input_names) else fx_names
        lines = [f"def {self._func_name}(self, {', '.join(params)}){maybe_return_annotation}:"]
        if self.doc:
            lines.append(f"    {docstring(self.doc)}")
        for spec_name, fx_name in zip(params, fx_names, strict=False):
            if spec_name != fx_name:
                lines.append(f"    {fx_name} = {spec_name}")
        if self.block:
            lines.extend(prologue(fx_names))
        return "\n".join(lines)

    def _gen_python_code(self, nodes: Any, root_module: str, namespace: Any, **kw: Any) -> Any:
        node_list = list(nodes)
        previous = self._body_transformer

        # a block's own inputs were handed to it; the model's are its caller's
        keep = (
            frozenset()
            if self.block
            else frozenset(n.name for n in node_list if n.op == "placeholder")
        )

        def annotate(body: list[str]) -> list[str]:
            if previous is not None:
                body = previous(body)
            body = [_readable(chunk, self.lists) for chunk in body]
            if self.blocks:
                body = hand_over(body, lambda e: _dotted(e) in self.blocks, keep)
            return _shape_comments(body, node_list)

        self._body_transformer = annotate
        try:
            return super()._gen_python_code(nodes, root_module, namespace, **kw)
        finally:
            self._body_transformer = previous


_COUNTER = re.compile(r"^# COUNTER: (\d+)$")
_SUBSCRIPT = re.compile(r"\[\(((?:[^\[\]()]|slice\([^()]*\))*?)\)\]")
_INDEX_ITEM = re.compile(r"-?\d+|None|\.\.\.|-?\d*:-?\d*(:-?\d*)?")
_SLICE = re.compile(r"slice\((None|-?\d+), (None|-?\d+), (None|-?\d+)\)")
_PRIVATE_NN = re.compile(r"\btorch\._C\._nn\.(\w+)\(")
_GETATTR_INDEX = re.compile(r'getattr\(((?:self|[A-Za-z_]\w*)(?:\.\w+|\[\d+\])*), "(\d+)"\)')


def _readable(line: str, lists: frozenset[str] = frozenset()) -> str:
    """fx's spellings as a person writes them: ``x[:, -1]`` for
    ``x[(slice(None, None, None), -1)]``, ``self.h_[0]`` for ``getattr(self.h_, "0")``, and
    ``torch.nn.functional.f`` for ``torch._C._nn.f`` (the same function object)."""
    line = _SUBSCRIPT.sub(_subscript, line)

    def index(m: re.Match[str]) -> str:
        # This is the code that runs: ``[k]`` only where ModuleList indexing finds the same
        # module (keys exactly 0..n-1; a repeat whose copy 0 has no module leaves a gap).
        path = _dotted(m.group(1))
        return f"{m.group(1)}[{m.group(2)}]" if path in lists else m.group(0)

    while "getattr(" in line:  # ``self.h_[0].mlp`` for ``getattr(self.h_, "0").mlp``
        new = _GETATTR_INDEX.sub(index, line)
        if new == line:
            break
        line = new
    return _PRIVATE_NN.sub(_public_nn, line)


def _dotted(expr: str) -> str | None:
    """``self.h_[0].inner`` -> ``h_.0.inner``; None for anything not under ``self``."""
    if expr != "self" and not expr.startswith(("self.", "self[")):
        return None
    return re.sub(r"\[(\d+)\]", r".\1", expr[4:]).lstrip(".")


def indexable_lists(root: nn.Module) -> frozenset[str]:
    """Dotted paths of the ModuleLists under ``root`` whose keys are exactly 0..n-1."""
    return frozenset(
        name
        for name, m in root.named_modules(remove_duplicate=False)
        if type(m) is nn.ModuleList and list(m._modules) == [str(i) for i in range(len(m))]
    )


def _subscript(m: re.Match[str]) -> str:
    def one(s: re.Match[str]) -> str:
        start, stop, step = ("" if v == "None" else v for v in s.groups())
        return f"{start}:{stop}" + (f":{step}" if step else "")

    inner = _SLICE.sub(one, m.group(1)).replace("Ellipsis", "...")
    items = [item.strip() for item in inner.split(",") if item.strip()]
    if not items or not all(_INDEX_ITEM.fullmatch(item) for item in items):
        return m.group(0)  # not a literal index: leave fx's spelling
    return f"[{', '.join(items)}]" if len(items) > 1 else f"[{items[0]},]"


def _public_nn(m: re.Match[str]) -> str:
    import torch
    import torch.nn.functional as F

    name = m.group(1)
    same = getattr(F, name, None) is getattr(torch._C._nn, name, object())
    return f"torch.nn.functional.{name}(" if same else m.group(0)


def _shape_comments(body: list[str], nodes: list[fx.Node]) -> list[str]:
    """Append each node's shape comment to the end of its line (after fx's ``x = None``)."""
    out: list[str] = []
    pending: str | None = None
    current: fx.Node | None = None
    for chunk in body:
        m = _COUNTER.match(chunk.strip())
        if m is not None:
            i = int(m.group(1))
            current = nodes[i] if i < len(nodes) else None
            out.append(chunk)
            continue
        if current is not None and chunk.startswith(f"{current.name} = "):
            pending = current.meta.get("archcomp_comment")
            current = None
        if pending and chunk.endswith("\n"):
            chunk = f"{chunk[:-1]}{comment(pending)}\n"
            pending = None
        out.append(chunk)
    return out
