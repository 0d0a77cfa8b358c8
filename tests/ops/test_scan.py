"""Scans (archcomp/ops/scan.py): selective_scan. Shapes on symbolic inputs, inferred sizes,
parameters, MACs, located errors; forward and gradients of both algorithms against the paper's
reference loop written out here and against transformers' ``mamba_selective_scan`` (the
recurrent loop of ``MambaMixer``'s torch path); the shipped Mamba mixer block against
transformers' ``MambaMixer``, every weight re-drawn and copied by name.

Tolerances (tests/NUMERICS.md): ``RoundingChains`` counts the chain of both sides. The loop's
chain grows by one multiply-add per position (K ~ L), the chunked scan's by log2 of the chunk
and of the chunk count; the decays exp(dt A) are in (0, 1], so no step amplifies an earlier
rounding and the rule's sqrt(K) growth holds along the sequence.

One file per op family (tests/ops/test_<family>.py mirrors archcomp/ops/<family>.py).
Lowerings run through the real compiler (tests/lowering.py), as users run them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numerics
import pytest
import torch
import torch.nn.functional as F
from lowering import check_declared, compile_for_test, compile_spec, fails, macs, out, run, spec
from numerics import RoundingChains
from torch import nn

from archcomp import load_graph
from archcomp.ir import TensorType
from archcomp.ir.dims import Sym, mul
from archcomp.nn.scan import SelectiveScan, chunked_scan, sequential_scan
from archcomp.ops.scan import SelectiveScanArgs

B, L = Sym.symbol("B"), Sym.symbol("L")

OPS = {"selective_scan": ("recurrent", "Selective Scan")}

SCAN_INPUTS = "x: [B, 6, L]\n  delta: [B, 6, L]\n  b: [B, 4, L]\n  c: [B, 4, L]\n  z: [B, 6, L]"
SCAN_IN = "in: {x: x, delta: delta, B: b, C: c, z: z}"


@pytest.mark.parametrize("name", sorted(OPS))
def test_declared_with_style_and_lowering(name: str) -> None:
    check_declared(name, *OPS[name])


def test_selective_scan_shapes_params_and_macs() -> None:
    assert out(SCAN_INPUTS, f"op: selective_scan, {SCAN_IN}") == (B, 6, L)
    g = load_graph(
        spec(
            "x: [B, 6, L]\n  b: [B, 4, L]",
            "- {id: n, op: selective_scan, in: {x: x, delta: x, B: b, C: b}}",
        )
    )
    n = g.nodes["n"]
    assert isinstance(n.args, SelectiveScanArgs)
    assert (n.args.num_features, n.args.d_state) == (6, 4)
    assert n.op.param_shapes(n.args) == {"A_log": (6, 4), "D": (6,)}
    assert n.outputs["out"] == TensorType((B, 6, L))
    assert macs(g, "n") == mul(mul(mul(B, 6), L), 13)  # 3 per state entry, 1 for the D skip


def test_selective_scan_errors() -> None:
    at = "x, delta"  # an input's error points at the input it names
    fails(
        "x: [B, 6, L]\n  delta: [B, 6, L]\n  b: [B, 4, L]\n  c: [B, 4, 7]",
        "op: selective_scan, in: {x: x, delta: delta, B: b, C: c}",
        "C must be [B, N, L] as B = [B, 4, L], found [B, 4, 7]",
        "c}",
    )
    fails(
        "x: [B, 6, L]\n  b: [2, 4, L]",
        "op: selective_scan, in: {x: x, delta: x, B: b, C: b}",
        "B must be [B, N, L] (batch and length of x) = [B, 4, L], found [2, 4, L]",
        "b, C",
    )
    fails(
        "x: [B, 6, L]\n  d: [B, 5, L]\n  b: [B, 4, L]",
        "op: selective_scan, in: {x: x, delta: d, B: b, C: b}",
        "delta must be [B, D, L] as x = [B, 6, L], found [B, 5, L]",
        "d, B",
    )
    fails(
        "x: [B, E, L]\n  b: [B, 4, L]",
        "op: selective_scan, in: {x: x, delta: x, B: b, C: b}",
        "x's channel dim (D, dim 1) must be a concrete size, found symbolic 'E'",
        at,
    )
    fails(
        "x: [B, 6, L]\n  b: [B, 4, L]",
        "op: selective_scan, in: {x: x, delta: x, B: b, C: b}, d_state: 8",
        "d_state is 8 but the input gives 4",
        "8}",
    )
    fails(
        "x: [B, 6]\n  b: [B, 4, L]",
        "op: selective_scan, in: {x: x, delta: x, B: b, C: b}",
        "selective_scan x [B, D, L] expects a rank-3 input, found [B, 6]",
        at,
    )
    fails(
        "x: {shape: [B, 6, L], dtype: int64}\n  b: [B, 4, L]",
        "op: selective_scan, in: {x: x, delta: x, B: b, C: b}",
        "selective_scan needs a floating-point input, found int64",
        at,
    )


def test_a_log_and_d_as_inputs_are_held_by_no_scan() -> None:
    """Given as inputs (``parameter`` nodes keyed by their own names: transformers' mixer.A_log
    and mixer.D), A_log and D are no parameters of the scan, and it computes with them;
    one without the other, or either of another shape, is a located error."""
    text = spec(
        "x: [B, 6, L]\n  b: [B, 4, L]",
        """
        - {id: A_log, op: parameter, shape: [6, 4], key: self}
        - {id: D, op: parameter, shape: [6], key: self}
        - {id: n, op: selective_scan, in: {x: x, delta: x, B: b, C: b, A_log: A_log, D: D}}
        """,
    )
    g, gm = compile_spec(text)
    assert g.nodes["n"].args.holds_params is False
    assert g.nodes["n"].op.param_shapes(g.nodes["n"].args) == {}
    assert sorted(gm.state_dict()) == ["A_log", "D"]
    u, b = torch.randn(2, 6, 5), torch.randn(2, 4, 5)
    held = SelectiveScan(6, 4)
    with torch.no_grad():
        held.A_log.copy_(gm.get_parameter("A_log"))
        held.D.copy_(gm.get_parameter("D"))
        assert torch.equal(run(gm, u, b)["y"], held(u, u, b, b))
    one = "op: selective_scan, in: {x: x, delta: x, B: b, C: b, A_log: a}"
    fails(
        "x: [B, 6, L]\n  b: [B, 4, L]\n  a: [6, 4]",
        one,
        "A_log comes in as an input: give both A_log and D, or neither",
        "a}",
    )
    fails(
        "x: [B, 6, L]\n  b: [B, 4, L]\n  a: [6, 5]\n  d: [6]",
        one.replace("a}", "a, D: d}"),
        "A_log must be [D, N] = [6, 4], found [6, 5]",
        "a, D",
    )


# -- numerics ----------------------------------------------------------------------------------


def euler(dt: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """A planted bug: the decay's first-order approximation 1 + dt A instead of exp(dt A)."""
    return 1 + dt * a


def reference_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    a_log: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    skip: torch.Tensor,
    z: torch.Tensor,
    delta_bias: torch.Tensor,
    decay: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lambda dt, a: torch.exp(dt * a),
) -> torch.Tensor:
    """The paper's ``selective_scan_ref``, one position at a time (delta_softplus: true)."""
    dt = F.softplus(delta + delta_bias[:, None])  # (B, D, L)
    a = -torch.exp(a_log)  # (D, N): A
    h = u.new_zeros(u.shape[0], u.shape[1], a.shape[1])  # (B, D, N)
    ys = []
    for t in range(u.shape[2]):
        step = dt[:, :, t, None]  # (B, D, 1)
        h = decay(step, a) * h + step * b[:, None, :, t] * u[:, :, t, None]
        ys.append(torch.einsum("bdn,bn->bd", h, c[:, :, t]))
    y = torch.stack(ys, dim=-1) + skip[:, None] * u  # (B, D, L)
    return y * F.silu(z)


SCAN_SPEC = spec(
    "x: [B, 6, L]\n  delta: [B, 6, L]\n  b: [B, 4, L]\n  c: [B, 4, L]\n  z: [B, 6, L]\n  bias: [6]",
    "- {id: n, op: selective_scan, in: {x: x, delta: delta, B: b, C: c, z: z, delta_bias: bias},"
    " delta_softplus: true, algorithm: ALGORITHM, chunk_size: 4}",
)


def _scan_inputs(length: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 6, length), (2, 6, length), (2, 4, length), (2, 4, length), (2, 6, length)]
    xs = [torch.randn(s, generator=g) for s in shapes]
    return (*xs, torch.randn(6, generator=g) * 0.5)


def _scan_module(gm: Any) -> SelectiveScan:
    m = gm.get_submodule(gm.node_meta["n"]["module"])
    assert isinstance(m, SelectiveScan)
    with torch.no_grad():  # decays spread over (0, 1): A_log drawn, not Mamba's 1..N
        m.A_log.copy_(torch.randn(6, 4, dtype=m.A_log.dtype) * 0.7)
        m.D.normal_()
    return m


def _against_reference(
    algorithm: str,
    length: int,
    decay: Any = None,
    dtype: torch.dtype = torch.float32,
    recompute: bool = False,
) -> float:
    """The compiled op against :func:`reference_scan`: outputs and the gradients of every
    input and parameter; returns the largest relative error, after asserting the rule."""
    text = SCAN_SPEC.replace("ALGORITHM", algorithm)
    if recompute:
        text = text.replace("chunk_size: 4}", "chunk_size: 4, recompute: true}")
    g = load_graph(text)
    gm = compile_for_test(g, dtype=dtype)
    m = _scan_module(gm)
    xs = tuple(t.to(dtype).requires_grad_() for t in _scan_inputs(length))
    u, delta, b, c, z, bias = xs
    extra = {"decay": decay} if decay else {}
    wrt = (*xs, m.A_log, m.D)
    with RoundingChains() as chains:
        y = run(gm, *xs)["y"]
        want = reference_scan(u, delta, m.A_log, b, c, m.D, z, bias, **extra)
        tol = chains.tolerance(dtype, y, want)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        got = torch.autograd.grad((y * w).sum(), wrt)
        ref = torch.autograd.grad((want * w).sum(), wrt)
    errors = [numerics.assert_close(y, want, tol, msg="output")]
    grad_tol = chains.tolerance(dtype)
    scale = numerics.rms(torch.cat([r.flatten() for r in ref]))
    for name, a, e in zip(
        ("u", "delta", "B", "C", "z", "delta_bias", "A_log", "D"), got, ref, strict=True
    ):
        errors.append(numerics.assert_close(a, e, grad_tol, floor=scale, msg=name))
    return max(errors)


@pytest.mark.parametrize(
    ("algorithm", "length"),
    [("sequential", 9), ("chunked", 9), ("chunked", 16), ("auto", 3), ("auto", 40)],
)
def test_selective_scan_equals_the_reference_loop(algorithm: str, length: int) -> None:
    _against_reference(algorithm, length)


@pytest.mark.parametrize(
    ("algorithm", "length"), [("sequential", 9), ("chunked", 9), ("chunked", 16), ("auto", 40)]
)
def test_recompute_equals_the_reference_loop(algorithm: str, length: int) -> None:
    """recompute: true, chunk by chunk under activation checkpointing (the last chunk
    partial at 9), the state carried between chunks: outputs and every gradient."""
    _against_reference(algorithm, length, recompute=True)


def test_recompute_keeps_no_per_state_tensor() -> None:
    """Under autograd the plain op keeps (B, D, L, N) tensors; with recompute what is kept
    is O(B D L): nothing of L * N elements per channel, and under a quarter of the bytes."""
    kept = []
    for recompute in (False, True):
        text = SCAN_SPEC.replace("ALGORITHM", "chunked")
        if recompute:
            text = text.replace("chunk_size: 4}", "chunk_size: 4, recompute: true}")
        gm = compile_for_test(load_graph(text))
        sizes: dict[int, int] = {}
        skip = {p.untyped_storage().data_ptr() for p in gm.parameters()}

        def pack(
            t: torch.Tensor, sizes: dict[int, int] = sizes, skip: set[int] = skip
        ) -> torch.Tensor:
            if t.untyped_storage().data_ptr() not in skip:
                sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        xs = tuple(t.requires_grad_() for t in _scan_inputs(64))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run(gm, *xs)
        kept.append(sizes)
    states = 2 * 6 * 64 * 4 * 4  # one (B, D, L, N) float32 tensor
    assert max(kept[0].values()) >= states
    assert max(kept[1].values()) < states
    assert sum(kept[1].values()) < sum(kept[0].values()) / 4


@pytest.mark.parametrize("algorithm", ["sequential", "chunked"])
def test_a_float64_build_scans_in_float64(algorithm: str) -> None:
    """float64's tolerance (1e-15) fails a scan that rounds to float32 inside."""
    _against_reference(algorithm, 9, dtype=torch.float64)


def test_the_reference_comparison_catches_a_wrong_discretisation() -> None:
    with pytest.raises(AssertionError, match="relative RMS error"):
        _against_reference("chunked", 9, decay=euler)


@pytest.mark.parametrize("length", [0, 1, 2, 5, 8, 31, 64])
@pytest.mark.parametrize("chunk_size", [1, 4, 32])
def test_chunked_scan_equals_the_loop_at_every_length(length: int, chunk_size: int) -> None:
    g = torch.Generator().manual_seed(length)
    a = torch.rand(2, 3, length, 4, generator=g)  # decays in [0, 1)
    b = torch.randn(2, 3, length, 4, generator=g)
    with RoundingChains() as chains:
        want = sequential_scan(a, b)
        got = chunked_scan(a, b, chunk_size)
        tol = chains.tolerance(torch.float32, got, want)
    numerics.assert_close(got, want, tol)


def test_equals_transformers_mamba_selective_scan() -> None:
    """transformers' torch path of the scan (its recurrent loop), forward and gradients."""
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    _, gm = compile_spec(SCAN_SPEC.replace("ALGORITHM", "auto"))
    m = _scan_module(gm)
    xs = tuple(t.requires_grad_() for t in _scan_inputs(24))
    u, delta, b, c, z, bias = xs
    wrt = (*xs, m.A_log, m.D)
    with RoundingChains() as chains:
        y = run(gm, *xs)["y"]
        A = -torch.exp(m.A_log.float())
        want = mamba_selective_scan(
            u, delta, A, b, c, D=m.D, z=z, delta_bias=bias, delta_softplus=True
        )
        tol = chains.tolerance(torch.float32, y, want)
        got = torch.autograd.grad(y.square().sum(), wrt)
        ref = torch.autograd.grad(want.square().sum(), wrt)
    numerics.assert_close(y, want, tol)
    scale = numerics.rms(torch.cat([r.flatten() for r in ref]))
    for a, e in zip(got, ref, strict=True):
        numerics.assert_close(a, e, chains.tolerance(torch.float32), floor=scale)


def test_init_build_dtypes_and_meta() -> None:
    text = spec(
        "x: [B, 6, L]\n  b: [B, 4, L]",
        "- {id: n, op: selective_scan, in: {x: x, delta: x, B: b, C: b}}",
    )
    g, gm = compile_spec(text)
    m = gm.get_submodule(gm.node_meta["n"]["module"])
    assert isinstance(m, SelectiveScan)
    assert torch.equal(-torch.exp(m.A_log), -torch.arange(1.0, 5.0).expand(6, 4))  # S4D-real
    assert torch.equal(m.D, torch.ones(6))
    x, b = torch.randn(2, 6, 5), torch.randn(2, 4, 5)
    half = compile_for_test(g, dtype=torch.bfloat16)
    half.load_state_dict(gm.state_dict())
    y = run(half, x.bfloat16(), b.bfloat16())["y"]
    assert y.dtype == torch.bfloat16  # computed in float32 inside, as the reference does
    meta = compile_for_test(g, device="meta")
    assert all(p.is_meta for p in meta.parameters())


# -- the Mamba mixer block against transformers' MambaMixer -------------------------------------

MIXER = """\
archcomp: 1
name: m
imports: [{library: mamba, blocks: [mamba_mixer]}]
inputs: {x: [B, L, 16]}
nodes:
  - {id: mixer, op: mamba_mixer, d_model: 16, d_state: 4, d_conv: 3, expand: 2, dt_rank: 3,
     bias: BIAS}
outputs: {y: mixer}
"""


def hf_name(name: str) -> str:
    """A MambaMixer parameter's name in the compiled spec: A_log and D sit on the scan node."""
    return f"mixer.ssm.{name}" if name in ("A_log", "D") else f"mixer.{name}"


def _hf_mixer(bias: bool) -> nn.Module:
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    cfg = MambaConfig(
        hidden_size=16, state_size=4, conv_kernel=3, expand=2, time_step_rank=3,
        num_hidden_layers=1, use_bias=bias, use_conv_bias=True, use_mambapy=False,
        use_associative_scan=False,
    )  # fmt: skip
    mixer = MambaMixer(cfg, layer_idx=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in mixer.named_parameters():  # every weight re-drawn
            scale = 0.7 if name == "A_log" else 0.4
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return mixer


@pytest.mark.parametrize("bias", [False, True])
def test_mamba_mixer_block_equals_transformers(bias: bool) -> None:
    ref = _hf_mixer(bias)
    _, gm = compile_spec(MIXER.replace("BIAS", str(bias).lower()))
    ours = dict(gm.named_parameters())
    assert set(ours) == {hf_name(k) for k, _ in ref.named_parameters()}
    gm.load_state_dict({hf_name(k): v for k, v in ref.state_dict().items()})
    x = torch.randn(2, 11, 16, generator=torch.Generator().manual_seed(4), requires_grad=True)
    names = [k for k, _ in ref.named_parameters()]
    with RoundingChains() as chains:
        y = run(gm, x)["y"]
        want = ref(x)
        tol = chains.tolerance(torch.float32, y, want)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
        got = torch.autograd.grad((y * w).sum(), [x, *(ours[hf_name(k)] for k in names)])
        expected = torch.autograd.grad((want * w).sum(), [x, *ref.parameters()])
    numerics.assert_close(y, want, tol)
    scale = numerics.rms(torch.cat([g.flatten() for g in expected]))
    for name, a, e in zip(["x", *names], got, expected, strict=True):
        numerics.assert_close(a, e, chains.tolerance(torch.float32), floor=scale, msg=name)


def test_auto_picks_the_chunked_scan_for_long_inputs_under_autograd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import archcomp.nn.scan as scan_module

    calls: list[str] = []
    for name in ("sequential_scan", "chunked_scan"):
        real = getattr(scan_module, name)
        monkeypatch.setattr(
            scan_module, name, lambda *a, _n=name, _f=real: calls.append(_n) or _f(*a)
        )
    m = SelectiveScan(6, 4)
    for length, grad, want in [
        (32, True, "sequential_scan"),
        (33, True, "chunked_scan"),
        (33, False, "sequential_scan"),
    ]:
        x, b = torch.randn(1, 6, length), torch.randn(1, 4, length)
        with torch.set_grad_enabled(grad):
            m(x, x, b, b)
        assert calls.pop() == want, (length, grad)
