"""Symbolic shape inference: each op's shape rule, in topological order."""

from __future__ import annotations

from typing import Any

from archcomp.base.errors import Reporter
from archcomp.ir import Graph, Node, Ref, TensorType
from archcomp.ir.dims import INT64_MAX, DimTooLarge, check_dim, fmt_shape, substitute
from archcomp.ops.registry import ShapeCtx, ShapeError

MAX_RANK = 64  # torch's limit on a tensor's dims


def infer_shapes(g: Graph, rep: Reporter) -> None:
    """Fill ``Node.outputs``; nodes downstream of an error are skipped, not re-reported.

    The copies of a repeated block share their op args objects (see ``Expander._clone``): a
    node with the same op, the same args object and the same input types as one already done
    gets that node's results without running the rule again.
    """
    done: dict[tuple[Any, ...], tuple[Any, Any, dict[str, TensorType]]] = {}
    at: dict[Any, Any] = {}  # symbolic dim -> its value at the example sizes
    _check_inputs_at_dims(g, rep, at)
    for name in g.nodes:
        node = g.nodes[name]
        types = _input_types(g, node)
        if types is None:
            _report_unproduced(g, node, rep)
            continue
        key = (
            node.op.name,
            id(node.args),
            *(tuple(t) if isinstance(t, list) else t for t in types.values()),
        )
        seen = done.get(key)
        if seen is not None and seen[0] is node.args:
            node.args, node.outputs = seen[1], dict(seen[2])
            continue
        original = node.args
        try:
            outs = _run_rule(g, node, types, at)
        except ShapeError as exc:
            _report(node, exc, rep, types)
            continue
        node.outputs = outs
        done[key] = (original, node.args, outs)  # holds ``original``: its id stays unique


def _check_inputs_at_dims(g: Graph, rep: Reporter, at: dict[Any, Any]) -> None:
    """Report an input with more than int64 elements at the example sizes of ``dims``."""
    for info in g.inputs.values() if g.dims else ():
        if _numel_at(info.type.shape, g.dims, at) > INT64_MAX:
            rep.add(
                info.origin.doc.diag(
                    "invalid-value",
                    f"at the example sizes in 'dims' input '{info.name}' would have more than "
                    "2**63 - 1 elements (int64 overflows)",
                    info.origin.path,
                    hint="dims are example sizes for summaries and MACs: choose ones a tensor "
                    "can have",
                )
            )


def _input_types(g: Graph, node: Node) -> dict[str, TensorType | list[TensorType] | None] | None:
    """The types of the node's inputs by port; None when a producer did not make one."""
    types: dict[str, TensorType | list[TensorType] | None] = {}
    missing = False
    for port, refs in node.inputs.items():
        if isinstance(refs, list):
            ts = [g.type_of(r) for r in refs]
            missing = missing or any(t is None for t in ts)
            types[port] = [t for t in ts if t is not None]
        else:
            t = g.type_of(refs)
            missing = missing or t is None
            types[port] = t
    return None if missing else types


def _run_rule(
    g: Graph,
    node: Node,
    types: dict[str, TensorType | list[TensorType] | None],
    at: dict[Any, Any],
) -> dict[str, TensorType]:
    """Run the op's shape rule: the result types by name; the inferred args are stored on
    ``node.args``. Raises :class:`ShapeError`."""
    ctx = ShapeCtx(node.args, types, mins=g.dim_min)
    try:
        result = node.op.shape(ctx)
        outs = result if isinstance(result, dict) else {node.op.results[0]: result}
        for rname, t in outs.items():
            _check_dims(t, rname, g.dims, at)
    except DimTooLarge as exc:
        raise ShapeError(
            f"the result's shape is too large to follow symbolically: {exc.message}",
            hint="give the symbols concrete sizes (ints or ${...} params)",
        ) from None
    if ctx.inferred:
        node.args = node.args.model_copy(update=ctx.inferred)
    try:
        _check_weights(node)
    except DimTooLarge as exc:
        raise ShapeError(f"its weights' shapes are too large: {exc.message}") from None
    return outs


def _report_unproduced(g: Graph, node: Node, rep: Reporter) -> None:
    """A reference to a result its (successful) producer did not produce, e.g. split's out5."""
    for ref in node.refs():
        producer = g.nodes.get(ref.node)
        if producer is None or not producer.outputs or ref.result in producer.outputs:
            continue
        made = ", ".join(producer.outputs)
        doc, path = node.origin.doc, node.origin.path
        rep.add(
            doc.diag(
                "bad-reference",
                f"'{ref}': node '{ref.node}' ({producer.op.name}) produced only {made}",
                (*path, "in"),
                node=node.name,
                op=node.op.name,
            )
        )


def _check_dims(
    t: TensorType,
    result: str,
    sizes: dict[str, int] | None = None,
    memo: dict[Any, Any] | None = None,
) -> None:
    if len(t.shape) > MAX_RANK:
        raise ShapeError(f"the result would have {len(t.shape)} dims; torch allows {MAX_RANK}")
    for d in t.shape:
        check_dim(d)
        if isinstance(d, int) and d <= 0:
            raise ShapeError(
                f"the result would have a non-positive size: {fmt_shape(t.shape)}",
                hint="the input is too small for this op's kernel, stride or padding",
            )
        if isinstance(d, int) and d > INT64_MAX:
            raise ShapeError(f"the result {fmt_shape(t.shape)} overflows int64")
    if _numel(t.shape) > INT64_MAX:
        raise ShapeError(
            f"the result {fmt_shape(t.shape)} has more than 2**63 - 1 elements (int64 overflows)"
        )
    if sizes and _numel_at(t.shape, sizes, {} if memo is None else memo) > INT64_MAX:
        raise ShapeError(
            f"at the example sizes in 'dims' the result {fmt_shape(t.shape)} would have more "
            "than 2**63 - 1 elements (int64 overflows)",
            hint="dims are example sizes for summaries and MACs: choose ones a tensor can have",
        )


def _check_weights(node: Node) -> None:
    """A parameter or buffer whose element count overflows int64 can never be allocated."""
    shapes = {**node.op.param_shapes(node.args), **node.op.buffer_shapes(node.args)}
    for pname, shape in shapes.items():
        if _numel(shape) > INT64_MAX:
            raise ShapeError(
                f"its {pname} would have shape {fmt_shape(tuple(shape))}, more than 2**63 - 1 "
                "elements (int64 overflows)"
            )


def _numel_at(shape: tuple[Any, ...], sizes: dict[str, int], memo: dict[Any, Any]) -> int:
    """Element count with the example sizes put in (a symbol without one counts as 1);
    ``memo`` keeps each symbolic dim's value at ``sizes`` (one pass, one ``sizes``)."""
    n = 1
    for d in shape:
        if isinstance(d, int):
            v: Any = d
        else:
            v = memo.get(d)
            if v is None:
                v = memo[d] = substitute(d, sizes)
        n *= v if isinstance(v, int) and v > 0 else 1
        if n > INT64_MAX:
            return n
    return n


def _numel(shape: tuple[Any, ...]) -> int:
    """Element count of the concrete dims (symbols count as 1, their smallest size)."""
    n = 1
    for d in shape:
        if isinstance(d, int):
            n *= d
    return n


def _report(node: Node, exc: ShapeError, rep: Reporter, types: dict[str, Any]) -> None:
    doc, path = node.origin.doc, node.origin.path
    where: tuple[str | int, ...]
    if exc.arg is not None and (*path, exc.arg) in doc.value_marks:
        where = (*path, exc.arg)
    elif exc.port is not None and (*path, "in", exc.port) in doc.value_marks:
        where = (*path, "in", exc.port)
    elif (*path, "in") in doc.value_marks:
        where = (*path, "in")
    else:
        where = (*path, "op")
    hint = exc.hint
    if hint is None and types:
        hint = "input shapes: " + ", ".join(_sources(node, types))
    rep.add(
        doc.diag("shape-mismatch", exc.message, where, node=node.name, op=node.op.name, hint=hint)
    )


def _sources(node: Node, types: dict[str, Any]) -> list[str]:
    """'name: shape' for each input, named after where it comes from (fc1, lstm.h_n, x)."""
    out: list[str] = []
    for port, refs in node.inputs.items():
        ts = types.get(port)
        pairs = zip(refs, ts or [], strict=False) if isinstance(refs, list) else [(refs, ts)]
        for ref, t in pairs:
            name = ref.node if ref.result in (None, "out") else str(ref)
            out.append(f"{name}: {_fmt(t)}")
    return out


def _fmt(t: Any) -> str:
    if isinstance(t, list):
        return "[" + ", ".join(fmt_shape(x.shape) for x in t) + "]"
    return fmt_shape(t.shape) if t is not None else "?"


def ref_str(r: Ref) -> str:
    return str(r)
