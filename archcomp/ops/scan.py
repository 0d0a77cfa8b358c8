"""Scans: selective_scan, Mamba's input-dependent state-space recurrence (S6)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from archcomp.ir import TensorType
from archcomp.ir.dims import Dim, Shape, fmt_shape, mul, prod
from archcomp.ir.drawing import Figure, Part
from archcomp.ops.common import need_float
from archcomp.ops.registry import (
    LowerCtx,
    OpArgs,
    OpDef,
    Port,
    ShapeCtx,
    ShapeError,
    Style,
    register,
)


class SelectiveScanArgs(OpArgs):
    """Mamba's selective scan (S6) over x [B, D, L], the layout of the paper's
    ``selective_scan_ref``: delta [B, D, L], B and C [B, N, L], an optional gate z [B, D, L]
    (the output is multiplied by silu(z)) and delta_bias [D]. With dt = delta (+ delta_bias,
    then softplus if ``delta_softplus``) and A = -exp(A_log):
    ``h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t``, ``y_t = C_t . h_t + D u_t``, from h = 0.
    The op owns A_log [D, N] (initialised S4D-real, A = -(1..N)) and D [D] (ones), Mamba's
    names; where both come in as inputs instead (``parameter`` nodes: transformers'
    ``mixer.A_log`` and ``mixer.D``, keyed by their own names), it holds none
    (``holds_params`` is inferred). ``num_features`` (D) and ``d_state`` (N) are inferred
    from x and B. ``algorithm``:
    ``sequential``, the reference loop of one step per position; ``chunked``, a parallel scan
    inside chunks of ``chunk_size`` positions and over the chunks (log steps, equal up to
    rounding); ``auto``, the chunked scan for inputs over 32 positions where autograd records
    or off the CPU, else the loop (the faster of the two on CPU, benchmarks/bench_scan.py).
    ``recompute``: under autograd, run chunk by chunk under activation checkpointing, keeping
    the (B, D, L) inputs and one (B, D, N) state per chunk instead of the (B, D, L, N) states
    (docs/scaling.md).
    """

    delta_softplus: bool = Field(default=False, description="softplus on delta (+ delta_bias)")
    algorithm: Literal["auto", "sequential", "chunked"] = Field(
        default="auto", description="the reference loop, the chunked parallel scan, or by length"
    )
    chunk_size: int = Field(default=32, gt=0, le=4096, description="positions per chunk")
    recompute: bool = Field(
        default=False,
        description="train keeping each chunk's entering state only; backward recomputes "
        "one chunk's states at a time (activation memory O(B D L), not O(B D L N))",
    )
    num_features: int | None = Field(default=None, gt=0, description="inferred from x's dim 1")
    d_state: int | None = Field(default=None, gt=0, description="inferred from B's dim 1")
    holds_params: bool | None = Field(
        default=None,
        description="inferred: false where A_log and D come in as inputs (it then holds none)",
    )


def _same(ctx: ShapeCtx, port: str, want: Shape, x: TensorType, layout: str) -> None:
    t = ctx.get(port)
    if t is None:
        return
    if t.dtype != x.dtype:
        raise ShapeError(f"{port} is {t.dtype} but x is {x.dtype}", port=port)
    if t.shape != want:
        raise ShapeError(
            f"{port} must be {layout} = {fmt_shape(want)}, found {fmt_shape(t.shape)}", port=port
        )


def _selective_scan_shape(ctx: ShapeCtx) -> TensorType:
    x = ctx.get("x")
    b = ctx.get("B")
    assert x is not None and b is not None
    need_float(x, "x", "selective_scan")
    ctx.need_rank(x, (3,), "x", "selective_scan x [B, D, L]")
    ctx.need_rank(b, (3,), "B", "selective_scan B [B, N, L]")
    batch, d, length = x.shape
    ctx.infer("num_features", ctx.concrete(d, "x's channel dim (D, dim 1)", "x"))
    n = ctx.infer("d_state", ctx.concrete(b.shape[1], "B's state dim (N, dim 1)", "B"))
    state: Shape = (batch, n, length)
    _same(ctx, "delta", x.shape, x, "[B, D, L] as x")
    _same(ctx, "B", state, x, "[B, N, L] (batch and length of x)")
    _same(ctx, "C", state, x, "[B, N, L] as B")
    _same(ctx, "z", x.shape, x, "[B, D, L] as x")
    _same(ctx, "delta_bias", (d,), x, "[D]")
    given = [p for p in ("A_log", "D") if ctx.get(p) is not None]
    if len(given) == 1:
        raise ShapeError(
            f"{given[0]} comes in as an input: give both A_log and D, or neither", port=given[0]
        )
    _weight(ctx, "A_log", (d, n), x, "[D, N]")
    _weight(ctx, "D", (d,), x, "[D]")
    ctx.infer("holds_params", not given)
    return TensorType(x.shape, x.dtype)


def _weight(ctx: ShapeCtx, port: str, want: Shape, x: TensorType, layout: str) -> None:
    """A_log or D given as an input: a float tensor of its shape."""
    t = ctx.get(port)
    if t is None:
        return
    need_float(t, port, "selective_scan")
    if t.shape != want:
        raise ShapeError(
            f"{port} must be {layout} = {fmt_shape(want)}, found {fmt_shape(t.shape)}", port=port
        )


def _selective_scan_params(a: SelectiveScanArgs) -> dict[str, Shape]:
    if a.holds_params is False:
        return {}  # A_log and D come in as inputs
    d, n = a.num_features or 0, a.d_state or 0
    return {"A_log": (d, n), "D": (d,)}


def _selective_scan_macs(a: SelectiveScanArgs, ins: Any, outs: dict[str, TensorType]) -> Dim:
    """Per position, channel and state: dt u times B, the state update, C . h (3); plus the
    D skip per position and channel."""
    elements = prod(outs["out"].shape)  # B * D * L
    return mul(elements, 3 * (a.d_state or 0) + 1)


def _selective_scan_lower(c: LowerCtx) -> Any:
    from archcomp.nn.scan import SelectiveScan

    a: SelectiveScanArgs = c.args
    scan = SelectiveScan(
        a.num_features or 0,
        a.d_state or 0,
        delta_softplus=a.delta_softplus,
        algorithm=a.algorithm,
        chunk_size=a.chunk_size,
        recompute=a.recompute,
        holds_params=a.holds_params is not False,
        **c.factory,
    )
    ins = c.inputs
    extra = {p: ins[p] for p in ("z", "delta_bias", "A_log", "D") if ins.get(p) is not None}
    return c.module(scan)(ins["x"], ins["delta"], ins["B"], ins["C"], **extra)


def gated_scan_figure(a: Any, ports: frozenset[str]) -> Figure | None:
    """Mamba's Figure 3: the SSM, and the gate branch SiLU(z) multiplying its output."""
    if "z" not in ports:
        return None
    return Figure(
        parts=(
            Part("ssm", "SSM", "recurrent"),
            Part("gate", "SiLU", "activation"),
            Part("mul", "×", "arith"),
        ),
        edges=(("ssm", "mul"), ("gate", "mul")),
        ports=(
            *((p, "ssm") for p in ("x", "delta", "B", "C", "A_log", "D")),
            ("z", "gate"),
        ),
        result="mul",
        same_rank=(("ssm", "gate"),),
    )


SELECTIVE_SCAN = register(
    OpDef(
        "selective_scan",
        SelectiveScanArgs,
        _selective_scan_shape,
        Style(
            "recurrent",
            "Selective Scan",
            state="h",
            figure_for=gated_scan_figure,
            figure_open=True,
        ),
        inputs=(
            Port("x"),
            Port("delta"),
            Port("B"),
            Port("C"),
            Port("z", optional=True),
            Port("delta_bias", optional=True),
            Port("A_log", optional=True),
            Port("D", optional=True),
        ),
        params=_selective_scan_params,
        macs=_selective_scan_macs,
        lower=_selective_scan_lower,
        doc="Mamba's selective state-space scan (S6): input-dependent delta, B, C; "
        "A = -exp(A_log), D skip, optional silu(z) gate; A_log and D its own or both given as "
        "inputs (parameter nodes keyed by their names). recompute: true bounds training "
        "activations to O(B D L) by checkpointing chunk by chunk. torch.jit.trace records "
        "the example's length (the scan loops over positions).",
    )
)
