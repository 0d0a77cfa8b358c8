"""Initializers named in specs: validated for every node (``check`` runs this pass), applied
by the torch backend (:mod:`archcomp.backends.torch.init`).

A node's ``init`` maps parameter names to initializers::

    init: {weight: xavier_uniform, bias: zeros}
    init: {weight: {normal: {std: 0.02}}}
    init: xavier_uniform            # stored as {"*": ...}: every parameter with >= 2 dims

A key selects the parameters whose name is the key (``weight``), ends with ``.key``
(``weight`` also selects ``q_proj.weight``) or starts with ``key.`` (``q_proj`` selects
``q_proj.weight`` and ``q_proj.bias``). An ``init`` on a block call is a default for every op
node inside the block, wherever it fits. Parameters nothing selects keep torch.nn's default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from archcomp.base.documents import SourceDoc, YamlPath
from archcomp.base.errors import Diagnostic, Reporter, did_you_mean
from archcomp.ir import Graph, Node


@dataclass(frozen=True)
class Initializer:
    """One named initializer: its allowed arguments (with defaults) and what it needs."""

    name: str
    defaults: Mapping[str, float | str]
    min_dims: int = 0  # fan-based initializers need a matrix or a kernel


INITIALIZERS: dict[str, Initializer] = {
    i.name: i
    for i in (
        Initializer("xavier_uniform", {"gain": 1.0}, 2),
        Initializer("xavier_normal", {"gain": 1.0}, 2),
        Initializer(
            "kaiming_uniform", {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"}, 2
        ),
        Initializer(
            "kaiming_normal", {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"}, 2
        ),
        Initializer("orthogonal", {"gain": 1.0}, 2),
        Initializer("normal", {"mean": 0.0, "std": 1.0}),
        Initializer("uniform", {"a": 0.0, "b": 1.0}),
        Initializer("trunc_normal", {"mean": 0.0, "std": 1.0, "a": -2.0, "b": 2.0}),
        Initializer("constant", {"value": 0.0}),
        Initializer("zeros", {}),
        Initializer("ones", {}),
        Initializer("sinusoidal", {"layout": "interleaved"}, 2),
    )
}


@dataclass(frozen=True)
class InitCall:
    """A resolved initializer for one parameter."""

    name: str
    kwargs: Mapping[str, float | str]


def _selects(key: str, param: str) -> bool:
    if key == "*":
        return True
    return param == key or param.endswith("." + key) or param.startswith(key + ".")


def resolve_node_init(
    node: Node, param_shapes: Mapping[str, tuple[Any, ...]]
) -> tuple[dict[str, InitCall], list[Diagnostic]]:
    """Parameter name -> initializer for one node, or located diagnostics.

    The node's own ``init`` comes first; then the defaults of the blocks around it, innermost
    first, for parameters still unset. A default applies where it fits: a key that names no
    parameter of this op, or a parameter too small for the initializer, is skipped silently.
    """
    r = _NodeInits(node, param_shapes)
    base_path = (*node.origin.path, "init")
    for key, spec in node.init.items():
        r.entry(key, spec, node.origin.doc, base_path, is_default=False)
    for key, spec, o in node.init_defaults:
        r.entry(key, spec, o.doc, o.path, is_default=True)
    return r.out, r.diags


class _NodeInits:
    """The initializers of one node's parameters, resolved entry by entry."""

    def __init__(self, node: Node, param_shapes: Mapping[str, tuple[Any, ...]]) -> None:
        self.node = node
        self.shapes = param_shapes
        self.out: dict[str, InitCall] = {}
        self.diags: list[Diagnostic] = []

    def entry(
        self, key: str, spec: Any, doc: SourceDoc, base: YamlPath, *, is_default: bool
    ) -> None:
        """One ``key: initializer`` of the node's ``init`` or of a block's default."""
        node, shapes = self.node, self.shapes
        path = base if key == "*" else (*base, key)
        if spec is None:
            return
        call, problem = _parse(spec)
        if call is None:
            hint = None
            if problem and problem.startswith("unknown initializer"):
                word = spec if isinstance(spec, str) else next(iter(spec), "")
                hint = did_you_mean(str(word), INITIALIZERS) or (
                    "initializers: " + ", ".join(INITIALIZERS)
                )
            self.diags.append(
                doc.diag(
                    "bad-init",
                    problem or "bad initializer",
                    path,
                    node=None if is_default else node.name,
                    op=None if is_default else node.op.name,
                    hint=hint,
                )
            )
            return
        chosen = [p for p in shapes if _selects(key, p)]
        if key == "*":
            chosen = [p for p in chosen if len(shapes[p]) >= 2]
        if is_default:
            need = INITIALIZERS[call.name].min_dims
            for p in chosen:
                if p not in self.out and len(shapes[p]) >= need:
                    self.out[p] = call
            return
        self._own(key, call, chosen, doc, path)

    def _own(
        self, key: str, call: InitCall, chosen: list[str], doc: SourceDoc, path: YamlPath
    ) -> None:
        """The node's own ``key: call``: every parameter it selects must take it."""
        node = self.node
        tied = [p for p in chosen if p in node.tie]
        if tied:
            tnode, tparam = node.tie[tied[0]]
            self.diags.append(
                doc.diag(
                    "bad-init",
                    f"{tied[0]} is tied to {tnode}{tparam and '.' + tparam}; it has that "
                    "node's values",
                    path,
                    key=True,
                    node=node.name,
                    op=node.op.name,
                    hint=f"initialize it on '{tnode}'",
                )
            )
            return
        if not chosen and key != "*":
            names = list(self.shapes)
            self.diags.append(
                doc.diag(
                    "bad-init",
                    f"op '{node.op.name}' has no parameter '{key}'",
                    path,
                    key=True,
                    node=node.name,
                    op=node.op.name,
                    hint=did_you_mean(key, names)
                    or (f"parameters: {', '.join(names)}" if names else "this op has none"),
                )
            )
            return
        need = INITIALIZERS[call.name].min_dims
        for p in chosen:
            shape = self.shapes[p]
            if len(shape) < need:
                self.diags.append(
                    doc.diag(
                        "bad-init",
                        f"{call.name} needs a parameter with at least {need} dims; "
                        f"{p} has shape {list(shape)}",
                        path,
                        node=node.name,
                        op=node.op.name,
                        hint="use normal, uniform, zeros, ones or constant for vectors",
                    )
                )
                continue
            # An exact name beats a wildcard or a suffix match.
            if p not in self.out or key == p:
                self.out[p] = call


def _parse(spec: Any) -> tuple[InitCall | None, str | None]:
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        name, raw = next(iter(spec.items()))
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            return None, f"arguments of '{name}' must be a mapping, e.g. {{{name}: {{...}}}}"
        kwargs = dict(raw)
    else:
        return None, "an initializer is a name or {name: {args}}, e.g. {normal: {std: 0.02}}"
    init = INITIALIZERS.get(str(name))
    if init is None:
        return None, f"unknown initializer '{name}'"
    resolved: dict[str, float | str] = dict(init.defaults)
    for k, v in kwargs.items():
        if k not in init.defaults:
            allowed = ", ".join(init.defaults) or "none"
            return None, f"{name} has no argument '{k}' (arguments: {allowed})"
        want = init.defaults[k]
        if isinstance(want, str):
            if not isinstance(v, str):
                return None, f"{name}: '{k}' must be a string, found {v!r}"
        elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None, f"{name}: '{k}' must be a finite number, found {v!r}"
        resolved[k] = float(v) if not isinstance(want, str) else v
    if name == "sinusoidal" and resolved["layout"] not in ("interleaved", "concat"):
        found = resolved["layout"]
        return None, f"sinusoidal: layout must be interleaved or concat, found {found!r}"
    if name in ("normal", "trunc_normal") and float(resolved["std"]) < 0:
        return None, f"{name}: std must be >= 0, found {resolved['std']}"
    return InitCall(str(name), resolved), None


def check_inits(g: Graph) -> tuple[dict[str, dict[str, InitCall]], list[Diagnostic]]:
    """Resolve every node's ``init``; all problems are returned together (each once)."""
    plans: dict[str, dict[str, InitCall]] = {}
    diags: list[Diagnostic] = []
    for node in g.nodes.values():
        if not node.init and not node.init_defaults:
            continue
        plan, problems = resolve_node_init(node, node.op.param_shapes(node.args))
        diags.extend(d for d in problems if d not in diags)
        if plan:
            plans[node.name] = plan
    return plans, diags


def check_init_pass(g: Graph, rep: Reporter) -> None:
    """Report every init problem; each node's plan (param -> InitCall) goes to
    ``node.meta["init"]`` for the backend."""
    plans, problems = check_inits(g)
    rep.extend(problems)
    for name, plan in plans.items():
        g.nodes[name].meta["init"] = plan
