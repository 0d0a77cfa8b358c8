"""The front end's last step: a loaded :class:`Program` and param overrides -> an unchecked
:class:`Graph` (params resolved, inputs typed, blocks expanded, references bound).

The passes (:mod:`archcomp.passes`) check it; :func:`archcomp.passes.pipeline.load_graph` runs
both. Also here: :func:`load_source` (a path, YAML string, mapping or the bare name of a
shipped spec -> Program),
:func:`parse_override` (``-p NAME=VALUE``) and :func:`normalized_spec`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archcomp.base.documents import SourceDoc
from archcomp.base.errors import Reporter, SpecError, UsageError, listing
from archcomp.frontend.expand import Body, Expanded, Expander, Frame, PendingRef, _outputs_of
from archcomp.frontend.expr import ExprError, show, substitute
from archcomp.frontend.library import is_bare_name, model_specs, shipped_spec
from archcomp.frontend.loader import Program, load_program
from archcomp.frontend.params import ParamProblem, check_names, resolve, unknown_override
from archcomp.frontend.schema import FORWARD_GLOBALS, RESERVED, DimDecl, InputDecl
from archcomp.frontend.source import SpecFileError
from archcomp.ir import Graph, InputInfo, Origin, Ref, TensorType
from archcomp.ir.dims import INT64_MAX, Dim, Sym

SpecSource = str | Path | Mapping[str, Any]


def load_source(source: SpecSource, *, base_dir: Path | None = None) -> Program:
    if isinstance(source, Mapping):
        import yaml

        text = yaml.safe_dump(dict(source), sort_keys=False)
        return load_program("<spec>", text=text, base_dir=base_dir)
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith("archcomp:")):
        return load_program("<string>", text=source, base_dir=base_dir)
    if isinstance(source, str) and is_bare_name(source):
        return load_program(shipped_spec(source))  # "gpt2": the shipped spec, never ./gpt2
    path = Path(source)
    try:
        return load_program(path)
    except SpecFileError as exc:
        hint = _shipped_hint(path)
        if hint is None:
            raise
        raise SpecFileError(f"{exc}; {hint}") from None


def _shipped_hint(path: Path) -> str | None:
    """A missing ``gpt2.yaml`` (or ``specs/gpt2.yaml``, a clone's path followed after ``pip
    install``): point at the shipped ``gpt2``."""
    name = path.stem
    if path.exists() or path.suffix not in (".yaml", ".yml") or name not in model_specs():
        return None
    return f"'{name}' (no slash, no .yaml) names the spec that ships with archcomp"


def to_graph(prog: Program, overrides: Mapping[str, Any], rep: Reporter) -> Graph:
    """Expand ``prog`` with ``overrides`` into a graph; errors go to ``rep`` (raised when the
    graph cannot be made at all)."""
    spec, doc = prog.spec, prog.doc
    if not spec.nodes:
        raise SpecError(
            [
                doc.diag(
                    "not-a-model",
                    "the spec has no 'nodes'",
                    (),
                    hint="a model spec has inputs, nodes and outputs; "
                    "a file with only blocks is a library to import",
                )
            ]
        )
    for key in ("name", "inputs", "outputs"):
        if not getattr(spec, key):
            rep.add(doc.diag("missing-key", f"missing required key '{key}'", (), key=True))
    env = _params(prog, overrides, rep)
    absent_inputs = _absent_inputs(spec.inputs, env, doc, rep)
    inputs = _inputs(
        {k: v for k, v in spec.inputs.items() if k not in absent_inputs}, env, doc, rep
    )
    mins = _mins(spec.dims, doc, rep)
    rep.raise_if_failed()

    ex = Expander(prog, rep)
    ex.out.absent_inputs = absent_inputs
    # an absent input is still a name: a present node that reads it is an error at the read
    bindings = {n: PendingRef(Ref(n), o) for n, o in {**absent_inputs, **_origins(inputs)}.items()}
    frame = Frame(Body(spec.nodes, doc, ("nodes",), list(bindings)), env, bindings)
    ex.body(frame)
    pending_outputs, output_origins = _model_outputs(ex, frame, prog)
    outputs: dict[str, Ref] = {}
    _link(ex.out, inputs, rep)
    _no_weights_from_absent(ex.out, rep)
    for oname, pending in pending_outputs.items():
        resolved = _resolve(ex.out, pending, inputs, rep)
        if resolved is not None:
            outputs[oname] = resolved
    rep.raise_if_failed()

    g = Graph(
        spec.name or "model",
        spec.description,
        env,
        _sizes(spec.dims),
        inputs,
        ex.out.nodes,
        outputs,
        output_origins,
        Origin(doc, ()),
    )
    g.dim_min = mins
    g.output_figures = _output_figures(prog, outputs, rep)
    g.scope_inputs = _scope_refs(ex.out.block_inputs, ex.out, inputs)
    g.scope_outputs = _scope_refs(
        {k: ex.out.aliases[k] for k in ex.out.block_inputs if k in ex.out.aliases}, ex.out, inputs
    )
    g.written_order = ex.out.order
    g.read_by_absent = _read_by_absent(ex.out, inputs)
    g.spec_factory = lambda: normalized_spec(prog, env)
    g.source = {"main": prog.main, "files": dict(prog.sources), "params": dict(overrides)}
    return g


def _sizes(dims: Mapping[str, int | DimDecl]) -> dict[str, int]:
    """The example sizes of ``dims`` (``T: 64``, ``T: {size: 64}``)."""
    out = {k: v if isinstance(v, int) else v.size for k, v in dims.items()}
    return {k: v for k, v in out.items() if v is not None}


def _mins(dims: Mapping[str, int | DimDecl], doc: SourceDoc, rep: Reporter) -> dict[str, int]:
    """The least values ``dims`` declares (``T: {min: 2}``); an example size below its
    least value is an error at the size."""
    out: dict[str, int] = {}
    for name, decl in dims.items():
        if isinstance(decl, int) or decl.min == 1:
            continue
        out[name] = decl.min
        if decl.size is not None and decl.size < decl.min:
            rep.add(
                doc.diag(
                    "invalid-value",
                    f"dim '{name}' has example size {decl.size}, below its least value {decl.min}",
                    ("dims", name, "size"),
                )
            )
    return out


def _is_dim(name: str, prog: Program) -> bool:
    """``name`` is a symbol of the inputs' shapes or of the spec's ``dims``."""
    if name in prog.spec.dims:
        return True
    shapes = [str(d) for i in prog.spec.inputs.values() for d in getattr(i, "shape", i)]
    return any(name in re.findall(r"[A-Za-z_]\w*", d) for d in shapes)


def _params(prog: Program, overrides: Mapping[str, Any], rep: Reporter) -> dict[str, Any]:
    """The model's params: the spec's defaults under ``overrides`` (a bad override raises
    :class:`UsageError`)."""
    spec, doc = prog.spec, prog.doc
    for name in overrides:
        if name not in spec.params:
            if _is_dim(name, prog):
                raise UsageError(
                    f"'{name}' is a dim of the inputs, not a param: 'archcomp summary --dims "
                    f"{name}=8' (archcomp.summary(..., dims={{'{name}': 8}})) sets its size"
                )
            raise UsageError(unknown_override(name, spec.params))
    rep.extend(check_names(spec.params, doc, ("params",)))

    def report(name: str, problem: ParamProblem) -> None:
        if problem.override:
            raise UsageError(problem.message)
        rep.add(doc.diag("invalid-param", problem.message, ("params", name), hint=problem.hint))

    return resolve(spec.params, overrides, report=report)


def _model_outputs(
    ex: Expander, frame: Frame, prog: Program
) -> tuple[dict[str, PendingRef], dict[str, Origin]]:
    """What each of the model's ``outputs`` names, and where it is written."""
    spec, doc = prog.spec, prog.doc
    pending: dict[str, PendingRef] = {}
    origins: dict[str, Origin] = {}
    for j, (oname, target) in enumerate(_outputs_of(spec.outputs).items()):
        p = (
            ("outputs",)
            if isinstance(spec.outputs, str)
            else (("outputs", j) if isinstance(spec.outputs, list) else ("outputs", oname))
        )
        r = ex.ref(frame, target, Origin(doc, p))
        if r is not None:
            pending[oname] = r
            origins[oname] = Origin(doc, p)
    return pending, origins


def _output_figures(prog: Program, outputs: Mapping[str, Ref], rep: Reporter) -> dict[str, str]:
    """``figure: {outputs: {logits: probabilities}}``: how the figure draws each output named
    there after it; a name that is no output is an error at it."""
    decl = prog.spec.figure
    if decl is None:
        return {}
    for name in decl.outputs:
        if name not in _outputs_of(prog.spec.outputs):
            rep.add(
                prog.doc.diag(
                    "bad-reference",
                    f"figure: '{name}' is not an output of the model",
                    ("figure", "outputs", name),
                    key=True,
                    hint=f"outputs: {listing(list(_outputs_of(prog.spec.outputs)))}",
                )
            )
    rep.raise_if_failed()
    return {k: v for k, v in decl.outputs.items() if k in outputs}


def _declared(origin: Origin) -> Any:
    """The location of an input's declaration (its name)."""
    return origin.doc.loc(origin.path, key=True)


def _origins(inputs: Mapping[str, InputInfo]) -> dict[str, Origin]:
    return {n: i.origin for n, i in inputs.items()}


def _absent_inputs(
    decls: Mapping[str, Any], env: Mapping[str, Any], doc: SourceDoc, rep: Reporter
) -> dict[str, Origin]:
    """The inputs whose ``when`` is false (where each is declared); a ``when`` that fails or
    is not a bool is reported (and the input taken as present)."""
    out: dict[str, Origin] = {}
    for name, value in decls.items():
        when = value.when if isinstance(value, InputDecl) else None
        if when is None:
            continue
        path = ("inputs", name, "when")
        try:
            present = substitute(when, env)
        except ExprError as exc:
            rep.add(doc.diag("bad-expression", exc.message, path, hint=exc.hint))
            continue
        if not isinstance(present, bool):
            rep.add(
                doc.diag(
                    "invalid-value",
                    f"'when' must be a bool, found {show(present)}",
                    path,
                    hint="write a comparison or a bool param: when: ${masking}",
                )
            )
        elif not present:
            out[name] = Origin(doc, ("inputs", name))
    return out


def _inputs(
    decls: Mapping[str, Any], env: Mapping[str, Any], doc: SourceDoc, rep: Reporter
) -> dict[str, InputInfo]:
    out: dict[str, InputInfo] = {}
    for name, value in decls.items():
        decl = value if isinstance(value, InputDecl) else InputDecl(shape=value)
        base = ("inputs", name) if not isinstance(value, InputDecl) else ("inputs", name, "shape")
        if name in RESERVED or name in FORWARD_GLOBALS:
            rep.add(
                doc.diag(
                    "reserved-name",
                    f"'{name}' is a reserved name and cannot be an input",
                    ("inputs", name),
                    key=True,
                    hint="the compiled forward uses this name" if name in FORWARD_GLOBALS else None,
                )
            )
            continue
        shape: list[Dim] = []
        ok = True
        for i, d in enumerate(decl.shape):
            path = (*base, i)
            dim = _dim(d, env, doc, path, rep)
            if dim is None:
                ok = False
            else:
                shape.append(dim)
        numel = 1
        for dim in shape:
            numel *= dim if isinstance(dim, int) else 1
        if ok and numel > INT64_MAX:
            rep.add(
                doc.diag(
                    "invalid-value",
                    f"input '{name}' would have more than 2**63 - 1 elements (int64 overflows)",
                    base,
                )
            )
            ok = False
        if ok:
            out[name] = InputInfo(
                name, TensorType(tuple(shape), decl.dtype), Origin(doc, ("inputs", name)), decl.doc
            )
    return out


def _dim(
    d: int | str, env: Mapping[str, Any], doc: SourceDoc, path: tuple[Any, ...], rep: Reporter
) -> Dim | None:
    if isinstance(d, int):
        if d <= 0:
            rep.add(doc.diag("invalid-value", f"a dimension must be positive, found {d}", path))
            return None
        return d
    if "${" in d:
        try:
            v = substitute(d, env)
        except ExprError as exc:
            rep.add(doc.diag("bad-expression", exc.message, path, hint=exc.hint))
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            msg = f"a dimension must be a positive int, found {show(v)}"
            rep.add(doc.diag("invalid-value", msg, path))
            return None
        return v
    if not d.isidentifier() or len(d) > 64:
        rep.add(
            doc.diag(
                "invalid-value",
                f"'{d}' is not a dimension: use an int, a symbol like B (a name of at most 64 "
                "characters), or ${{expression}}",
                path,
            )
        )
        return None
    if d in env:
        rep.add(
            doc.diag(
                "ambiguous-dim",
                f"'{d}' is a param; a bare name here is a symbol",
                path,
                hint=f"write '${{{d}}}' for the param's value, or rename the symbol",
            )
        )
        return None
    return Sym.symbol(d)


def _link(ex: Expanded, inputs: Mapping[str, InputInfo], rep: Reporter) -> None:
    for name, ports in ex.pending.items():
        node = ex.nodes[name]
        bound: dict[str, Ref | list[Ref]] = {}
        for port, prs in ports.items():
            if isinstance(prs, list):
                refs = [_resolve(ex, p, inputs, rep) for p in prs]
                good = [r for r in refs if r is not None]
                bound[port] = good if len(good) == len(refs) else [Ref("?missing")]
            else:
                r = _resolve(ex, prs, inputs, rep)
                bound[port] = r if r is not None else Ref("?missing")
        node.inputs = bound
    # Unresolvable references ("?missing") were reported where they were written.


def _no_weights_from_absent(ex: Expanded, rep: Reporter) -> None:
    """A tie to an absent node, or a shared copy whose copy 0 is absent, has no weights to
    reuse; nor has a tie to a block call (a tie names a node inside it)."""
    seen: set[tuple[str, tuple[object, ...]]] = set()  # one error per written node
    for node in ex.nodes.values():
        doc, path = node.origin.doc, node.origin.path
        for pname, (tnode, _) in node.tie.items():
            absent = ex.absent.get(tnode)
            if absent is None and tnode not in ex.nodes and tnode in ex.aliases:
                rep.add(
                    doc.diag(
                        "bad-tie",
                        f"tie target '{tnode}' is a block call, not a node: name a node of it "
                        "and, unless it is keyed by its id, the parameter",
                        (*path, "tie", pname),
                        node=node.name,
                        op=node.op.name,
                        hint=f"tie: {{{pname}: {tnode}.<node>.<parameter>}}",
                    )
                )
            if absent is not None:
                rep.add(
                    doc.diag(
                        "bad-tie",
                        f"tie target '{tnode}' is absent ({absent.why}): it has no weights",
                        (*path, "tie", pname),
                        node=node.name,
                        op=node.op.name,
                    )
                )
        if node.shared_with in ex.absent and (doc.file, path) not in seen:
            seen.add((doc.file, path))
            assert node.shared_with is not None
            rep.add(
                doc.diag(
                    "bad-reference",
                    f"shares the weights of '{node.shared_with}', which is absent "
                    f"({ex.absent[node.shared_with].why})",
                    (*path, "id"),
                    node=node.name,
                    op=node.op.name,
                    hint="with 'shared: true', a node's 'when' cannot depend on 'index'",
                )
            )


def _read_by_absent(ex: Expanded, inputs: Mapping[str, InputInfo]) -> set[str]:
    """Inputs and nodes that absent nodes would have read (an input read only there is not
    unused: it is used under other params)."""
    quiet = Reporter()  # a bad reference is reported where a present node reads it
    out: set[str] = set()
    for absent in ex.absent.values():
        for pr in absent.reads:
            r = _resolve(ex, pr, inputs, quiet)
            if r is not None:
                out.add(r.node)
    return out


def _scope_refs(
    table: Mapping[str, Mapping[str, PendingRef]], ex: Expanded, inputs: Mapping[str, InputInfo]
) -> dict[str, dict[str, Ref]]:
    """Block instance -> name -> resolved tensor, for its inputs or its outputs."""
    out: dict[str, dict[str, Ref]] = {}
    quiet = Reporter()  # a bad reference was reported where it is written
    for scope, bindings in table.items():
        resolved = {n: _resolve(ex, pr, inputs, quiet) for n, pr in bindings.items()}
        out[scope] = {n: r for n, r in resolved.items() if r is not None}
    return out


def _resolve(
    ex: Expanded, pr: PendingRef, inputs: Mapping[str, InputInfo], rep: Reporter
) -> Ref | None:
    for _ in range(10_000):
        r = pr.ref
        if r.node in inputs and r.result is None:
            return r
        if r.node in ex.absent_inputs:
            rep.add(
                pr.origin.doc.diag(
                    "bad-reference",
                    f"'{r}' is an absent input ('when' is false)",
                    pr.origin.path,
                    hint="make this reader absent under the same condition",
                    related=(_declared(ex.absent_inputs[r.node]),),
                )
            )
            return None
        node = ex.nodes.get(r.node)
        if node is not None:
            res = r.result or node.op.results[0]
            if res not in node.op.results:
                rep.add(
                    pr.origin.doc.diag(
                        "bad-reference",
                        f"'{r}': op '{node.op.name}' has no result '{res}'",
                        pr.origin.path,
                        hint=f"results: {', '.join(node.op.results)}",
                    )
                )
                return None
            return Ref(r.node, res)
        outs = ex.aliases.get(r.node)
        if outs is None:
            return None
        res = r.result or ex.first_output.get(r.node, "")
        absent = ex.absent.get(r.node)
        if absent is not None and res not in outs:
            known = res in absent.results
            rep.add(
                pr.origin.doc.diag(
                    "bad-reference",
                    f"'{r}': '{r.node}' is absent ({absent.why}); it passes on its input "
                    f"as '{r.node}' and has no '{res}'"
                    if known
                    else f"'{r}': {absent.what} has no result '{res}'",
                    pr.origin.path,
                    hint=f"read '{r.node}', or make this reader absent under the same condition"
                    if known
                    else f"results: {', '.join(absent.results)}",
                )
            )
            return None
        if res not in outs:
            if r.result is not None and r.result not in outs:
                rep.add(
                    pr.origin.doc.diag(
                        "bad-reference",
                        f"'{r}' has no output '{res}'",
                        pr.origin.path,
                        hint=f"outputs: {listing(list(outs))}" if outs else None,
                    )
                )
            return None
        pr = outs[res]
    return None


def normalized_spec(prog: Program, env: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as one self-contained mapping: imported blocks inlined, each param set to its
    value (expressions elsewhere stay as written and re-evaluate to the same values)."""
    raw = _copy_plain(prog.raw)
    raw.pop("imports", None)
    raw["params"] = {k: env[k] for k in prog.spec.params if k in env}
    blocks = dict(raw.get("blocks") or {})
    for name, b in prog.blocks.items():
        blocks.setdefault(name, _copy_plain(b.raw))
    if blocks:
        raw["blocks"] = blocks
    return raw


def _copy_plain(value: Any) -> Any:
    """A deep copy of what YAML gives (mappings, lists, scalars), a few times faster than
    ``copy.deepcopy`` on a 20,000-node spec; anything else is deep-copied."""
    kind = type(value)
    if kind is dict:
        return {k: _copy_plain(v) for k, v in value.items()}
    if kind is list:
        return [_copy_plain(v) for v in value]
    if value is None or kind in (str, int, float, bool):
        return value
    return copy.deepcopy(value)


def parse_override(text: str) -> tuple[str, Any]:
    """``d_model=256`` -> ("d_model", 256); values are read as YAML 1.2 scalars or flow lists."""
    from archcomp.frontend.source import load_yaml

    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq or not name.isidentifier():
        raise UsageError(f"-p expects NAME=VALUE, found '{text}'")
    if value.strip() == "":
        raise UsageError(f"-p {name}= needs a value")
    try:
        parsed, _ = load_yaml(value, "<-p>")
    except SpecError as exc:
        first = exc.diagnostics[0] if exc.diagnostics else None
        if first is not None and first.code == "yaml-number-too-large":
            raise UsageError(f"-p {name}: {first.message}") from None
        return name, value
    if isinstance(parsed, dict):
        raise UsageError(f"-p {name}: a param value cannot be a mapping")
    return name, parsed
