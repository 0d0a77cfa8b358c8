"""``archcomp summary``: the table of shapes, parameters, memory, activations and MACs, per
node and per block, without allocating anything."""

from __future__ import annotations

import argparse
import json
from typing import Any

from archcomp.base.text import visible
from archcomp.cli.common import (
    add_depth_flag,
    add_params_flag,
    command,
    load_graph_arg,
    overrides,
    spec_help,
)

DTYPE_HELP = "float32, float16, bfloat16 or float64: the dtype memory is counted in"


def add_memory_flags(p: argparse.ArgumentParser) -> None:
    """--optimizer and --activation-checkpointing: what the training-step figures assume."""
    p.add_argument(
        "--optimizer",
        choices=("adamw", "sgd", "none"),
        default="adamw",
        help="optimizer state counted in the training step (sgd: with momentum; default: adamw)",
    )
    p.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="estimate activations with every repeated block checkpointed (recomputed in "
        "the backward pass)",
    )
    p.add_argument(
        "--world-size",
        type=_world_size,
        default=None,
        metavar="N",
        help="also show the per-rank memory of FSDP over N ranks (parameters, gradients and "
        "optimizer state sharded; see docs/scaling.md)",
    )


MAX_WORLD_SIZE = 1 << 20  # ranks; more is no machine that exists


def _world_size(text: str) -> int:
    try:
        n = int(text) if len(text) <= 20 else 0
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_WORLD_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 1 to {MAX_WORLD_SIZE:,}, not '{visible(text[:40])}'"
        )
    return n


def parse_dims(text: str) -> dict[str, int]:
    """``--dims B=8,T=512``: dim names and sizes."""
    out: dict[str, int] = {}
    for item in text.split(","):
        name, eq, size = item.strip().partition("=")
        try:
            value = int(size) if eq and len(size) <= 20 else 0
        except ValueError:
            value = 0
        if not name.strip().isidentifier() or value < 1:
            raise argparse.ArgumentTypeError(
                f"expected NAME=SIZE[,NAME=SIZE...] with sizes >= 1, e.g. B=8,T=512; found "
                f"'{visible(item[:40])}'"
            )
        out[name.strip()] = value
    return out


def add_dims_flag(p: argparse.ArgumentParser, what: str) -> None:
    """``--dims B=8,T=512``: the sizes of the inputs' dims ``what`` (summary, view)."""
    p.add_argument(
        "--dims",
        type=parse_dims,
        action="append",
        default=[],
        metavar="NAME=SIZE,...",
        help=f"sizes of the inputs' dims {what}, e.g. --dims B=8,T=512 "
        "(default: the spec's dims; a dim it does not set is 1)",
    )


def _configure_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help=spec_help("spec file to summarize"))
    add_params_flag(p)
    add_dims_flag(p, "the figures are computed at")
    p.add_argument("--dtype", default="float32", help=DTYPE_HELP + " (default: float32)")
    add_memory_flags(p)
    p.add_argument(
        "--json", action="store_true", help="print the summary as JSON (exact numbers) on stdout"
    )
    add_depth_flag(p)
    p.add_argument(
        "--kv-cache",
        action="store_true",
        help="also the memory of a decoder's KV cache per attention layer and in all "
        "(docs/generation.md)",
    )
    p.add_argument(
        "--context",
        type=int,
        metavar="N",
        help="tokens the KV cache holds per sequence (default: the spec's dims T), batch: dims B",
    )


def cmd_summary(args: argparse.Namespace) -> int:
    from archcomp.api import summary
    from archcomp.cli.output import show

    graph = load_graph_arg(args.spec, overrides(args))
    kv = kv_cache_rows(graph, args) if args.kv_cache else None
    s = summary(
        graph,
        dtype=args.dtype,
        optimizer=args.optimizer,
        activation_checkpointing=args.activation_checkpointing,
        world_size=args.world_size,
        dims={k: v for d in args.dims for k, v in d.items()},
    )
    if args.json:
        out = s.to_json(args.depth)
        if kv is not None:
            out["kv_cache"] = kv
        print(json.dumps(out, indent=2))
    else:
        from archcomp.backends.torch.summary import renderable

        show(renderable(s, args.depth))
        if kv is not None:
            print(kv_cache_text(kv))
    return 0


def kv_cache_rows(graph: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The KV cache of the spec's decoder at batch dims B and ``--context`` tokens, from a
    build on meta (nothing allocated): per layer and in all, exact bytes."""
    from archcomp.api import build_graph
    from archcomp.backends.torch.devices import resolve_dtype
    from archcomp.backends.torch.generate import cache_memory, check_decoder
    from archcomp.backends.torch.memory import example_inputs
    from archcomp.backends.torch.seq2seq import DECODER_INPUT
    from archcomp.base.errors import UsageError

    context = args.context if args.context is not None else graph.dims.get("T", 0)
    batch = graph.dims.get("B", 1)
    if context < 1:
        raise UsageError("--kv-cache needs --context N (the spec's dims have no T)")
    model = build_graph(graph, device="meta", dtype=args.dtype)
    dtype = resolve_dtype(args.dtype)
    sources = dict(zip(graph.inputs, example_inputs(graph, graph.dims, dtype), strict=True))
    sources.pop(DECODER_INPUT, None)  # an encoder-decoder's source at the spec's dims
    try:
        check_decoder(model)
        rows = cache_memory(model, batch, context, dtype, encoder_inputs=sources)
    except ValueError as exc:
        raise UsageError(f"--kv-cache: {exc}") from None
    layers = [_kv_row(name, tensors, size) for name, tensors, size in rows]
    total = sum(r[2] for r in rows)
    return {
        "batch": batch,
        "context": context,
        "dtype": args.dtype,
        "layers": layers,
        "bytes": total,
    }


def _kv_row(name: str, tensors: dict[str, tuple[int, ...]], size: int) -> dict[str, Any]:
    """One cached module: its tensors' shapes by name (attention's also as keys, values)."""
    row: dict[str, Any] = {"layer": name, "tensors": {t: list(s) for t, s in tensors.items()}}
    if "k" in tensors and "v" in tensors:
        row |= {"keys": list(tensors["k"]), "values": list(tensors["v"])}
    return row | {"bytes": size}


def _kv_shapes(tensors: dict[str, list[int]]) -> str:
    """``k, v (1, 8, 8192, 128)`` when keys and values have one shape, else each named."""
    shapes = ["(" + ", ".join(map(str, s)) + ")" for s in tensors.values()]
    if len(set(shapes)) == 1:
        return f"{', '.join(tensors)} {shapes[0]}"
    return ", ".join(f"{t} {s}" for t, s in zip(tensors, shapes, strict=True))


def kv_cache_text(kv: dict[str, Any]) -> str:
    from archcomp.base.units import fmt_bytes

    head = f"KV cache ({kv['dtype']}, batch {kv['batch']}, context {kv['context']:,})"
    width = max(len(r["layer"]) for r in kv["layers"])
    shapes = [_kv_shapes(r["tensors"]) for r in kv["layers"]]
    col = max(30, *map(len, shapes))
    lines = [head]
    for r, shape in zip(kv["layers"], shapes, strict=True):
        lines.append(f"  {r['layer']:<{width}}  {shape:<{col}} {fmt_bytes(r['bytes']):>10}")
    count = f"{len(kv['layers'])} modules"
    lines.append(f"  {'total':<{width}}  {count:<{col}} {fmt_bytes(kv['bytes']):>10}")
    return "\n".join(lines)


cmd_summary.configure = _configure_summary  # type: ignore[attr-defined]
command(
    "summary",
    "per-node table of shapes, parameters, memory, activations and MACs, nothing allocated",
)(cmd_summary)
