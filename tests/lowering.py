"""Compile a checked graph with the real torch backend, for op tests.

The op tests exercise each op's ``lower`` through the compiler users run
(:func:`archcomp.api.build_graph`), not through a stand-in.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from typing import Any

import numerics
import pytest
import torch
from numerics import RoundingChains, assert_same
from torch import nn
from torch.testing import assert_close

from archcomp import SpecError, load_graph
from archcomp.api import build_graph
from archcomp.backends.torch.module import ArchModule
from archcomp.ir import Graph, Ref
from archcomp.ir.dims import Dim
from archcomp.ops import get_op
from archcomp.ops.registry import PALETTE


def check_declared(name: str, family: str, label: str) -> None:
    """The op is registered with its drawing style (family, label), a lowering and a doc."""
    op = get_op(name)
    assert op is not None
    assert (op.style.family, op.style.label) == (family, label)
    assert op.style.family in PALETTE
    assert op.lower is not None and op.doc


def compile_for_test(g: Graph, device: Any = "cpu", dtype: Any = None) -> ArchModule:
    """The graph compiled as ``archcomp.build`` compiles it (float32 unless ``dtype``)."""
    return build_graph(g, device=device, dtype=dtype)


def run(model: ArchModule, *xs: torch.Tensor, **kw: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's outputs by output name, also for a spec with a single output."""
    result = model(*xs, **kw)
    if isinstance(result, torch.Tensor):
        assert len(model.output_names) == 1, model.output_names
        return {model.output_names[0]: result}
    assert isinstance(result, dict), type(result)
    assert tuple(result) == model.output_names, (tuple(result), model.output_names)
    return result


# -- one-node specs and their checks --------------------------------------------------


def spec(inputs: str, nodes: str, outputs: str = "{y: n}") -> str:
    """A one-file spec; ``nodes`` is the body of the nodes list (one node per line)."""
    body = textwrap.dedent(nodes).strip("\n")
    lines = "\n".join("  " + ln for ln in body.splitlines())
    return (
        f"archcomp: 1\nname: m\ninputs:\n  {inputs.strip()}\nnodes:\n{lines}\noutputs: {outputs}\n"
    )


def out(inputs: str, node: str, result: str = "y") -> tuple[Dim, ...]:
    """The output shape of a one-node spec (the node is ``n``)."""
    g = load_graph(spec(inputs, f"- {{id: n, {node}}}"))
    t = g.output_types[result]
    assert t is not None
    return t.shape


def error_of(text: str) -> tuple[str, int, int]:
    """The single diagnostic of a failing spec: message, line, column."""
    with pytest.raises(SpecError) as info:
        load_graph(text)
    diags = info.value.diagnostics
    assert len(diags) == 1, info.value.format()
    d = diags[0]
    assert d.loc is not None
    return d.message, d.loc.line, d.loc.col


def where(text: str, token: str) -> tuple[int, int]:
    """1-based line and column of the first ``token`` on the line of node ``n``."""
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if "{id: n," in ln)
    assert token in lines[i], (token, lines[i])
    return i + 1, lines[i].index(token) + 1


def fails(inputs: str, node: str, message: str, at: str) -> None:
    """A one-node spec fails with exactly ``message``, pointing at token ``at``."""
    text = spec(inputs, f"- {{id: n, {node}}}")
    assert error_of(text) == (message, *where(text, at))


def compile_spec(text: str) -> tuple[Graph, ArchModule]:
    g = load_graph(text)
    gm = compile_for_test(g)
    check_state(g, gm)
    return g, gm


def check_state(g: Graph, gm: ArchModule) -> None:
    """params= and buffers= match the lowered modules' state exactly (names and shapes)."""
    for name, node in g.nodes.items():
        path = gm.node_meta[name]["module"]  # where the compiler registered the node's module
        if path is not None and path in dict(gm.named_parameters()):  # keyed by its node id
            assert node.op.param_shapes(node.args) == {"": tuple(gm.get_parameter(path).shape)}
            continue
        if path is not None and path in dict(gm.named_buffers()):  # a buffer keyed by its id
            assert node.op.buffer_shapes(node.args) == {"": tuple(gm.get_buffer(path).shape)}
            continue
        m = gm.get_submodule(path) if path is not None else None
        params = {k: tuple(p.shape) for k, p in m.named_parameters()} if m else {}
        buffers = {k: tuple(b.shape) for k, b in m.named_buffers()} if m else {}
        assert node.op.param_shapes(node.args) == params, name
        assert node.op.buffer_shapes(node.args) == buffers, name


def macs(g: Graph, name: str) -> Dim:
    node = g.nodes[name]
    assert node.op.macs is not None
    ins = {p: g.type_of(r) for p, r in node.inputs.items() if isinstance(r, Ref)}
    return node.op.macs(node.args, ins, node.outputs)


def projected_grads(
    y: torch.Tensor, want: torch.Tensor, inputs: tuple[torch.Tensor, ...]
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Gradients of a random projection of both results, with respect to ``inputs``."""
    w = torch.randn_like(want)
    got = torch.autograd.grad((y * w).sum(), inputs, retain_graph=True)
    ref = torch.autograd.grad((want * w).sum(), inputs, retain_graph=True)
    return got, ref


def check_against(
    node: str,
    ref: Callable[..., torch.Tensor],
    shapes: dict[str, tuple[int, ...]],
    positive: bool = False,
) -> None:
    """A one-node spec ``n`` against ``ref``: forward values, dtype, shape and gradients."""
    inputs = "\n  ".join(f"{k}: {list(v)}" for k, v in shapes.items())
    g = load_graph(spec(inputs, f"- {{id: n, {node}}}"))
    gm = compile_for_test(g)
    torch.manual_seed(0)
    xs = tuple(
        (torch.rand(s) + 0.5 if positive else torch.randn(s) * 2).requires_grad_()
        for s in shapes.values()
    )
    y = run(gm, *xs)["y"]
    want = ref(*xs)
    assert_close(y, want)
    t = g.output_types["y"]
    assert t is not None and t.shape == tuple(want.shape) and t.dtype == "float32"
    got, wgrad = projected_grads(y, want, xs)
    for a, b in zip(got, wgrad, strict=True):
        assert_close(a, b)


def assert_typed(g: Graph, name: str, value: torch.Tensor) -> None:
    """The checked output type is the tensor torch computed (shape and dtype)."""
    t = g.output_types[name]
    assert t is not None
    assert t.shape == tuple(value.shape), name
    assert t.dtype == str(value.dtype).removeprefix("torch."), name


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def check_torch(
    node: str,
    ref: Callable[..., torch.Tensor | dict[str, torch.Tensor]],
    tensors: dict[str, torch.Tensor],
    outputs: str = "{y: n}",
) -> Graph:
    """A one-node spec ``n`` on ``tensors`` (the inputs, declared with their shapes and dtypes)
    against ``ref``, the torch call it stands for, on the same tensors: each output's checked
    shape and dtype are torch's, its values bitwise equal (the same kernel runs: NUMERICS.md),
    and so are the gradients of a random projection of each float output with respect to the
    float inputs (none where the op does not pass one)."""
    decl = "\n  ".join(
        f"{k}: {{shape: {list(v.shape)}, dtype: {dtype_name(v)}}}" for k, v in tensors.items()
    )
    g = load_graph(spec(decl, f"- {{id: n, {node}}}", outputs))
    xs = tuple(t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors.values())
    got = run(compile_for_test(g), *xs)
    result = ref(*xs)
    want = result if isinstance(result, dict) else {"y": result}
    assert tuple(got) == tuple(want)
    floats = tuple(x for x in xs if x.requires_grad)
    for name, value in want.items():
        assert_typed(g, name, value)
        assert_same(got[name], value, name)
        if floats and value.requires_grad:
            w = torch.randn_like(value)
            ours = torch.autograd.grad((got[name] * w).sum(), floats, allow_unused=True)
            theirs = torch.autograd.grad((value * w).sum(), floats, allow_unused=True)
            for a, b in zip(ours, theirs, strict=True):
                assert (a is None) == (b is None), name
                if a is not None:
                    assert_same(a, b, f"gradient through {name}")
    return g


def errors_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_graph(text)
    return [d.message for d in info.value.diagnostics]


def hf_rope(head_dim: int, rope_parameters: dict[str, Any], n: int) -> tuple[Any, Any]:
    """transformers' Llama cos/sin tables at positions 0..n-1 (1, n, head_dim)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        max_position_embeddings=256,
        rope_parameters=rope_parameters,
    )
    return LlamaRotaryEmbedding(cfg)(torch.zeros(1), torch.arange(n)[None])


def spec_body(body: str) -> str:
    return "archcomp: 1\nname: m\n" + textwrap.dedent(body).strip() + "\n"


def where_on(text: str, line_has: str, token: str) -> tuple[int, int]:
    """1-based line and column of ``token`` on the first line containing ``line_has``."""
    for i, line in enumerate(text.splitlines(), 1):
        if line_has in line:
            return i, line.index(token, line.index(line_has)) + 1
    raise AssertionError(f"{line_has!r} not in spec")


def param_shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in m.named_parameters()}


def declared(g: Graph, node: str) -> dict[str, tuple[int, ...]]:
    n = g.nodes[node]
    return {k: tuple(int(d) for d in v) for k, v in n.op.param_shapes(n.args).items()}  # type: ignore[arg-type]


MHA_SELF = spec_body(
    """
    inputs:
      x: [B, T, 512]
    nodes:
      - {id: attn, op: multi_head_attention, num_heads: 8}
    outputs: attn
    """
)


def posenc_spec(op: str, args: str = "", seq: str = "S", d: int = 16) -> str:
    return spec_body(
        f"""
        inputs:
          x: [B, {seq}, {d}]
        nodes:
          - {{id: pos, op: {op}{args}}}
        outputs: pos
        """
    )


def rnn_spec(
    op: str,
    args: str,
    x: str = "[B, S, 10]",
    states: str = "",
    outputs: str = "{out: rnn.output, h: rnn.h_n}",
) -> str:
    """One recurrent node ``rnn``; ``states`` like "h0: [1, B, 8]; c0: [1, B, 8]"."""
    decls = [s.strip() for s in states.split(";") if s.strip()]
    names = [d.split(":")[0] for d in decls]
    lines = ["inputs:", f"  x: {x}", *(f"  {d}" for d in decls), "nodes:"]
    ports = ", in: {x: x" + "".join(f", {n}: {n}" for n in names) + "}" if names else ""
    lines.append(f"  - {{id: rnn, op: {op}, {args}{ports}}}")
    lines.append(f"outputs: {outputs}")
    return spec_body("\n".join(lines))


def redraw(module: nn.Module, seed: int) -> None:
    """Re-draw every parameter of a reference module: matrices ~ N(0, 1/fan_in), vectors and
    tables ~ N(0, 0.5), norm weights ~ 1 + N(0, 0.3); nothing is left at its initial value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * r)
            elif p.dim() == 2 and "bias" not in name:
                p.copy_(r / p.shape[1] ** 0.5)
            else:
                p.copy_(0.5 * r)


def check_equivalent(
    model: ArchModule,
    ref: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    weights: dict[str, torch.Tensor],
    grad_inputs: int | None = None,
) -> None:
    """The compiled model's (first) output against ``ref`` on the same inputs, forward and the
    gradients of every float input (of the first ``grad_inputs``) and every parameter, by the
    rule of tests/NUMERICS.md.

    ``weights`` maps each of the model's parameters (all of them) to the reference's tensor,
    copied in first; the gradients are compared under the same pairing.
    """
    params = dict(model.named_parameters())
    assert set(weights) == set(params), (sorted(weights), sorted(params))
    with torch.no_grad():
        for name, w in weights.items():
            params[name].copy_(w)
    wanted = len(inputs) if grad_inputs is None else grad_inputs
    grads = [t.is_floating_point() and i < wanted for i, t in enumerate(inputs)]
    ours = [t.clone().requires_grad_(g) for t, g in zip(inputs, grads, strict=True)]
    theirs = [t.clone().requires_grad_(g) for t, g in zip(inputs, grads, strict=True)]
    with RoundingChains() as chains:
        got = next(iter(run(model, *ours).values()))
        want = ref(*theirs)
        out_tol = chains.tolerance(torch.float32, got, want)
        w = torch.randn(want.shape, generator=torch.Generator().manual_seed(7))
        (got * w).sum().backward()
        (want * w).sum().backward()
    numerics.assert_close(got, want, out_tol, msg="output")
    tol = chains.tolerance(torch.float32)
    pairs = [(params[n].grad, w.grad, n) for n, w in weights.items()]
    pairs += [
        (a.grad, b.grad, f"input {i}") for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
    ]
    pairs = [(a, b, n) for a, b, n in pairs if b is not None or a is not None]
    for a, b, n in pairs:
        assert a is not None and b is not None, n
    floor = numerics.rms(torch.cat([b.flatten() for _, b, _ in pairs]))  # type: ignore[union-attr]
    for a, b, n in pairs:
        numerics.assert_close(a, b, tol, floor=floor, msg=n)  # type: ignore[arg-type]


# -- transformers references ----------------------------------------------------------------


def hf_config(name: str, **kw: Any) -> Any:
    """A small transformers config with eager attention (the reference writes the math out)."""
    import transformers

    cfg = getattr(transformers, f"{name}Config")(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def additive(allowed: torch.Tensor) -> torch.Tensor:
    """(T, S) bool -> (1, 1, T, S) additive mask: 0 where allowed, -inf elsewhere."""
    return torch.zeros(allowed.shape).masked_fill(~allowed, -math.inf)[None, None]


def hf_names(model: nn.Module, ref: nn.Module, rename: dict[str, str]) -> dict[str, torch.Tensor]:
    """Each of the model's parameters -> the reference's of the renamed key (node prefixes
    dropped, then ``rename`` applied to the pieces)."""
    ref_params = dict(ref.named_parameters())
    out = {}
    for name, _ in model.named_parameters():
        key = name.split(".", 1)[1]
        for a, b in rename.items():
            key = key.replace(a, b)
        out[name] = ref_params.pop(key)
    assert not ref_params, f"reference weights left unmapped: {sorted(ref_params)}"
    return out
