"""Element-wise math (add/sub/mul/div with scalars, neg, sqrt, rsqrt, exp, pow, clamp), the
activations leaky_relu, elu, softplus, hardswish, mish, glu, the norms group_norm and
instance_norm, and identity.

Shapes and dtypes against what torch computes, located errors, parameter and buffer shapes
against the real torch modules, and forward values and gradients of each lowering (through the
real compiler, tests/lowering.py) against independent references: the formula written out in
torch, or the torch.nn module with the weights copied. Tolerances: assert_close's float32
defaults (tests/numerics.py replaces them once the numerics branch lands).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from lowering import check_declared, compile_for_test, run
from test_ops_tensor import check_state, fails, macs, out, spec
from torch import nn
from torch.testing import assert_close

from archcomp import SpecError, load_graph
from archcomp.ir.dims import Sym, mul

B, S = Sym.symbol("B"), Sym.symbol("S")

OPS = {
    "sub": ("arith", "−"),
    "div": ("arith", "÷"),
    "neg": ("arith", "−x"),
    "sqrt": ("arith", "√"),
    "rsqrt": ("arith", "1/√"),
    "exp": ("arith", "exp"),
    "pow": ("arith", "Pow"),
    "clamp": ("arith", "Clamp"),
    "leaky_relu": ("activation", "Leaky ReLU"),
    "elu": ("activation", "ELU"),
    "softplus": ("activation", "Softplus"),
    "hardswish": ("activation", "Hardswish"),
    "mish": ("activation", "Mish"),
    "glu": ("activation", "GLU"),
    "group_norm": ("norm", "Group Norm"),
    "instance_norm": ("norm", "Instance Norm"),
    "identity": ("shape", "Identity"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def _grads(
    y: torch.Tensor, want: torch.Tensor, inputs: tuple[torch.Tensor, ...]
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Gradients of a random projection of both results, with respect to ``inputs``."""
    w = torch.randn_like(want)
    got = torch.autograd.grad((y * w).sum(), inputs, retain_graph=True)
    ref = torch.autograd.grad((want * w).sum(), inputs, retain_graph=True)
    return got, ref


def _check(
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
    got, wgrad = _grads(y, want, xs)
    for a, b in zip(got, wgrad, strict=True):
        assert_close(a, b)


# -- arithmetic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "ref", "positive"),
    [
        ("op: sub, in: [x, y]", lambda x, y: x - y, False),
        ("op: div, in: [x, y]", lambda x, y: x / y, True),
        ("op: sub, in: [x, y, x]", lambda x, y: x - y - x, False),
        ("op: div, in: [x, y, y]", lambda x, y: x / y / y, True),
        ("op: add, in: [x, y], scalar: 0.5", lambda x, y: x + y + 0.5, False),
        ("op: mul, in: [x, y], scalar: 3", lambda x, y: x * y * 3, False),
        ("op: sub, in: [x, y], scalar: 2, scalar_first: true", lambda x, y: 2 - x - y, False),
        ("op: div, in: [x, y], scalar: 1, scalar_first: true", lambda x, y: 1 / x / y, True),
        ("op: div, in: [x, y], scalar: 4", lambda x, y: x / y / 4, True),
    ],
)
def test_binary_arithmetic_matches_torch(
    node: str, ref: Callable[..., torch.Tensor], positive: bool
) -> None:
    _check(node, ref, {"x": (2, 3, 4), "y": (3, 1)}, positive)  # y broadcasts


@pytest.mark.parametrize(
    ("node", "ref", "positive"),
    [
        ("op: add, scalar: 1.0e-6", lambda x: x + 1e-6, False),
        ("op: sub, scalar: 1", lambda x: x - 1, False),
        ("op: sub, scalar: 1, scalar_first: true", lambda x: 1 - x, False),
        ("op: mul, scalar: -0.5", lambda x: x * -0.5, False),
        ("op: div, scalar: 8", lambda x: x / 8, False),
        ("op: neg", lambda x: -x, False),
        ("op: sqrt", lambda x: x**0.5, True),
        ("op: rsqrt", lambda x: 1 / x**0.5, True),
        ("op: exp", lambda x: math.e**x, False),
        ("op: pow, exponent: 2", lambda x: x * x, False),
        ("op: pow, exponent: -1.5", lambda x: 1 / (x * x**0.5), True),
        ("op: clamp, min: -1, max: 1.5", lambda x: x.clamp(-1, 1.5), False),
        ("op: clamp, min: 0", lambda x: torch.where(x < 0, 0.0, x), False),
        ("op: clamp, max: 6", lambda x: torch.where(x > 6, 6.0, x), False),
    ],
)
def test_unary_arithmetic_matches_torch(
    node: str, ref: Callable[..., torch.Tensor], positive: bool
) -> None:
    _check(node, ref, {"x": (2, 3, 4)}, positive)


def test_arithmetic_code_reads_as_written() -> None:
    g = load_graph(
        spec(
            "x: [B, 4]",
            """
            - {id: a, op: sub, in: x, scalar: 1, scalar_first: true}
            - {id: b, op: div, in: [a, x], scalar: 2}
            - {id: c, op: pow, exponent: 2}
            - {id: d, op: neg}
            - {id: n, op: clamp, min: 0}
            """,
        )
    )
    code = compile_for_test(g).code
    for line in ("a = 1 - x", "b_truediv = a / x", "b = b_truediv / 2", "c = b ** 2", "d = -c"):
        assert line in code, code
    assert "torch.clamp(d, min = 0)" in code


DTYPES = ("float32", "float16", "int64", "bool")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("scalar", [None, 2, 0.5])
def test_result_dtypes_are_torchs(dtype: str, op: str, scalar: float | None) -> None:
    """The checked dtype is the one torch's promotion gives, and the compiled op gives it."""
    fn = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}[op]
    x = torch.tensor([[1, 0, 1]], dtype=getattr(torch, dtype))
    y = torch.tensor([[1, 1, 1]], dtype=getattr(torch, dtype))
    ins = "x" if scalar is not None else "[x, y]"
    node = f"op: {op}, in: {ins}" + (f", scalar: {scalar}" if scalar is not None else "")
    typed = f"{{shape: [1, 3], dtype: {dtype}}}"
    text = spec(
        f"x: {typed}\n  y: {typed}",
        f"- {{id: n, {node}}}\n- {{id: u, op: concat, in: [y]}}",  # y is used either way
        "{y: n, u: u}",
    )
    try:
        want = fn(x, scalar) if scalar is not None else fn(x, y)
    except RuntimeError:  # torch refuses '-' on bools
        with pytest.raises(SpecError, match="sub does not take bool tensors"):
            load_graph(text)
        return
    g = load_graph(text)
    t = g.output_types["y"]
    assert t is not None and t.dtype == str(want.dtype).removeprefix("torch.")
    got = run(compile_for_test(g), x, y)["y"]
    assert got.dtype == want.dtype and torch.equal(got, want)


def test_arithmetic_shapes_and_errors() -> None:
    assert out("x: [B, S, 4]\n  y: [S, 1]", "op: sub, in: [x, y]") == (B, S, 4)
    assert out("x: [B, 4]", "op: div, scalar: 2") == (B, 4)
    assert out("x: [B, 4]", "op: identity") == (B, 4)
    fails(
        "x: [B, 4]",
        "op: add, in: x",
        "needs at least two inputs, found 1",
        "x}",
    )
    fails(
        "x: [B, 4]\n  y: [B, 3]",
        "op: div, in: [x, y]",
        "shapes [B, 4] and [B, 3] do not match at dim -1 (4 vs 3)",
        "[x, y]",
    )
    fails(
        "x: [B, 4]",
        "op: sub, scalar_first: true",
        "scalar_first needs a scalar",
        "true",
    )
    fails("x: [B, 4]", "op: clamp", "clamp needs min, max or both", "clamp")
    fails("x: [B, 4]", "op: clamp, min: 2, max: 1", "min (2) is above max (1)", "1}")
    fails(
        "x: {shape: [B, 4], dtype: int64}",
        "op: sqrt",
        "sqrt needs a floating-point input, found int64",
        "sqrt",
    )
    fails(
        "x: {shape: [B, 4], dtype: bool}",
        "op: neg",
        "neg does not take a bool tensor (torch refuses '-' on it)",
        "neg",
    )
    fails(
        "x: [B, 4]",
        "op: mul, scalar: true",
        "'scalar': expected an int or a float, found bool True",
        "true",
    )
    fails("x: [B, 4]", "op: pow", "missing required argument 'exponent'", "{id")


# -- activations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "module"),
    [
        ("op: leaky_relu", nn.LeakyReLU()),
        ("op: leaky_relu, negative_slope: 0.2", nn.LeakyReLU(0.2)),
        ("op: elu", nn.ELU()),
        ("op: elu, alpha: 0.5", nn.ELU(0.5)),
        ("op: softplus", nn.Softplus()),
        ("op: softplus, beta: 2, threshold: 3", nn.Softplus(2, 3)),
        ("op: hardswish", nn.Hardswish()),
        ("op: mish", nn.Mish()),
        ("op: glu", nn.GLU()),
        ("op: glu, dim: 1", nn.GLU(1)),
    ],
)
def test_activations_match_torch_modules(node: str, module: nn.Module) -> None:
    _check(node, module, {"x": (2, 6, 4)})


def test_activation_formulas() -> None:
    """The lowerings are the formulas (not only torch's modules agreeing with themselves)."""
    x = torch.linspace(-4, 4, 17).reshape(1, 17)
    formulas: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "op: leaky_relu, negative_slope: 0.1": lambda t: torch.where(t >= 0, t, 0.1 * t),
        "op: elu, alpha: 0.7": lambda t: torch.where(t > 0, t, 0.7 * (torch.exp(t) - 1)),
        "op: softplus, beta: 2": lambda t: torch.log1p(torch.exp(2 * t)) / 2,
        "op: hardswish": lambda t: t * torch.clamp(t + 3, 0, 6) / 6,
        "op: mish": lambda t: t * torch.tanh(torch.log1p(torch.exp(t))),
    }
    for node, formula in formulas.items():
        gm = compile_for_test(load_graph(spec("x: [1, 17]", f"- {{id: n, {node}}}")))
        assert_close(run(gm, x)["y"], formula(x), msg=node)
    gm = compile_for_test(load_graph(spec("x: [1, 8]", "- {id: n, op: glu}")))
    x = torch.randn(1, 8)
    assert_close(run(gm, x)["y"], x[:, :4] * torch.sigmoid(x[:, 4:]))


def test_glu_shapes_and_errors() -> None:
    assert out("x: [B, S, 8]", "op: glu") == (B, S, 4)
    assert out("x: [B, 6, S]", "op: glu, dim: 1") == (B, 3, S)
    fails(
        "x: [B, S, 7]",
        "op: glu",
        "glu halves dim 2, but its size 7 is not even",
        "glu",
    )
    fails("x: [B, S, 8]", "op: glu, dim: 1", "glu halves dim 1, but its size S is not even", "1}")
    fails("x: [B, 8]", "op: glu, dim: 2", "dim=2 is out of range for a rank-2 tensor", "2}")
    fails(
        "x: [B, 8]",
        "op: softplus, beta: 0",
        "'beta': input should be greater than 0, found 0",
        "0}",
    )


# -- norms -----------------------------------------------------------------------------------


def _group_norm_ref(
    x: torch.Tensor, groups: int, w: torch.Tensor, b: torch.Tensor, eps: float
) -> torch.Tensor:
    """Group norm written out: mean and biased variance per (sample, group)."""
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    mean = g.mean(-1, keepdim=True)
    var = ((g - mean) ** 2).mean(-1, keepdim=True)
    y = ((g - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.dim() - 2)
    return y * w.reshape(shape) + b.reshape(shape)


def test_group_norm_shapes_params_and_errors() -> None:
    g = load_graph(spec("x: [B, 12, S]", "- {id: n, op: group_norm, num_groups: 3}"))
    node = g.nodes["n"]
    assert node.args.num_channels == 12  # type: ignore[attr-defined]
    assert node.op.param_shapes(node.args) == {"weight": (12,), "bias": (12,)}
    assert {k: tuple(p.shape) for k, p in nn.GroupNorm(3, 12).named_parameters()} == {
        "weight": (12,),
        "bias": (12,),
    }
    assert macs(g, "n") == mul(mul(B, S), 12)
    g = load_graph(spec("x: [B, 4]", "- {id: n, op: group_norm, num_groups: 2, affine: false}"))
    assert g.nodes["n"].op.param_shapes(g.nodes["n"].args) == {}
    fails(
        "x: [B, 10, 4, 4]",
        "op: group_norm, num_groups: 4",
        "num_groups=4 does not divide the 10 channels",
        "4}",
    )
    fails(
        "x: [B, S, 4]",
        "op: group_norm, num_groups: 1",
        "the channel dim (dim 1) must be a concrete size, found symbolic 'S'",
        "group_norm",
    )
    fails("x: [B, 8]", "op: group_norm", "missing required argument 'num_groups'", "{id")


@pytest.mark.parametrize("shape", [(3, 8), (3, 8, 5), (3, 8, 4, 5)])
def test_group_norm_matches_the_formula(shape: tuple[int, ...]) -> None:
    dims = ", ".join(str(d) for d in shape)
    g = load_graph(spec(f"x: [{dims}]", "- {id: n, op: group_norm, num_groups: 4, eps: 0.001}"))
    gm = compile_for_test(g)
    check_state(g, gm)
    assert isinstance(gm.n, nn.GroupNorm)
    with torch.no_grad():
        gm.n.weight.normal_()
        gm.n.bias.normal_()
    x = torch.randn(shape, requires_grad=True)
    w = gm.n.weight.detach().clone().requires_grad_()
    b = gm.n.bias.detach().clone().requires_grad_()
    y = run(gm, x)["y"]
    want = _group_norm_ref(x, 4, w, b, 1e-3)
    assert_close(y, want)
    proj = torch.randn_like(want)
    got = torch.autograd.grad((y * proj).sum(), (x, gm.n.weight, gm.n.bias))
    ref = torch.autograd.grad((want * proj).sum(), (x, w, b))
    for a, r in zip(got, ref, strict=True):
        assert_close(a, r)


def test_instance_norm_shapes_params_and_errors() -> None:
    for x, cls in (("[B, 6, S]", nn.InstanceNorm1d), ("[B, 6, 4, 4]", nn.InstanceNorm2d)):
        g = load_graph(spec(f"x: {x}", "- {id: n, op: instance_norm}"))
        node = g.nodes["n"]
        assert node.args.num_features == 6  # type: ignore[attr-defined]
        assert node.op.param_shapes(node.args) == {} == node.op.buffer_shapes(node.args)
        m = cls(6, affine=True, track_running_stats=True)
        g = load_graph(
            spec(f"x: {x}", "- {id: n, op: instance_norm, affine: true, track_running_stats: true}")
        )
        node = g.nodes["n"]
        assert node.op.param_shapes(node.args) == {
            k: tuple(p.shape) for k, p in m.named_parameters()
        }
        assert node.op.buffer_shapes(node.args) == {k: tuple(b.shape) for k, b in m.named_buffers()}
    fails(
        "x: [B, 6]",
        "op: instance_norm",
        "instance_norm (B, C, ...) expects a rank-3 or 4 or 5 input, found [B, 6]",
        "instance_norm",
    )


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 5, 4, 3), (2, 3, 2, 3, 4)])
def test_instance_norm_matches_torch_in_train_and_eval(shape: tuple[int, ...]) -> None:
    dims = ", ".join(str(d) for d in shape)
    node = "- {id: n, op: instance_norm, affine: true, track_running_stats: true, momentum: 0.3}"
    g = load_graph(spec(f"x: [{dims}]", node))
    gm = compile_for_test(g)
    check_state(g, gm)
    ref = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}[len(shape)](
        shape[1], affine=True, track_running_stats=True, momentum=0.3
    )
    with torch.no_grad():
        gm.n.weight.normal_()
        gm.n.bias.normal_()
    ref.load_state_dict(gm.n.state_dict())
    x = torch.randn(shape, requires_grad=True)
    for mode in ("train", "eval"):
        gm.train(mode == "train")
        ref.train(mode == "train")
        y, want = run(gm, x)["y"], ref(x)
        assert_close(y, want, msg=mode)
        got, wgrad = _grads(y, want, (x,))
        assert_close(got[0], wgrad[0], msg=mode)
        assert_close(gm.n.running_mean, ref.running_mean, msg=mode)
        assert_close(gm.n.running_var, ref.running_var, msg=mode)
    # without running stats: per-instance statistics, written out
    g = load_graph(spec(f"x: [{dims}]", "- {id: n, op: instance_norm}"))
    gm = compile_for_test(g).eval()
    flat = x.reshape(*shape[:2], -1)
    mean = flat.mean(-1, keepdim=True)
    var = flat.var(-1, unbiased=False, keepdim=True)
    assert_close(run(gm, x)["y"], ((flat - mean) / torch.sqrt(var + 1e-5)).reshape(shape))


# -- identity --------------------------------------------------------------------------------


def test_identity_adds_no_code() -> None:
    g = load_graph(
        spec(
            "x: {shape: [B, 4], dtype: int64}",
            "- {id: same, op: identity}\n- {id: n, op: add, in: [same, x]}",
        )
    )
    assert g.output_types["y"] is not None and g.output_types["y"].dtype == "int64"
    gm = compile_for_test(g)
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "call_function", "output"]
    assert "n = x + x" in gm.code
    x = torch.arange(8).reshape(2, 4)
    assert torch.equal(run(gm, x)["y"], 2 * x)
