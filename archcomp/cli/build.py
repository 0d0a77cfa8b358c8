"""``archcomp build``: compile a spec, print its table, write the artifact (and --emit-python)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from archcomp.base.errors import UsageError
from archcomp.cli.common import (
    add_depth_flag,
    add_params_flag,
    command,
    load_graph_arg,
    overrides,
    spec_help,
)
from archcomp.cli.output import QUIET, info

BUILD_ROWS = 500  # rows of the table build prints; `archcomp summary` lists them all


def _configure_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help=spec_help("the spec to compile"))
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="artifact path (default: build/<name>.safetensors)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda, cuda:N, mps, meta or auto (default: cpu); on meta only the summary "
        "(and --emit-python) is produced",
    )
    p.add_argument("--dtype", default="float32", help="float32, float16, bfloat16 or float64")
    add_params_flag(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    p.add_argument(
        "--emit-python",
        metavar="FILE",
        help="also write standalone PyTorch source equivalent to the compiled module",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="refuse builds whose parameters and buffers exceed SIZE (e.g. 8GB, 512MiB)",
    )
    p.add_argument(
        "--max-init-flops",
        type=float,
        default=1e11,
        metavar="N",
        help="refuse builds whose initializers need more floating-point operations than N "
        "(orthogonal init is a QR decomposition, cubic in the weight's size; default 1e11)",
    )
    add_depth_flag(p)
    from archcomp.cli.summary import add_memory_flags

    add_memory_flags(p)


def cmd_build(args: argparse.Namespace) -> int:
    from archcomp.base.gcpause import paused

    # the graph, the model, its summary: hundreds of thousands of objects for a large spec,
    # all alive until the command returns; the collector would walk them again and again
    with paused():
        return _build(args)


def _build(args: argparse.Namespace) -> int:
    from archcomp.api import build_graph
    from archcomp.backends.torch.artifact import artifact_writer
    from archcomp.backends.torch.options import BuildOptions
    from archcomp.backends.torch.summary import summarize
    from archcomp.base.fileio import OutputExists, Writer, write_all

    params = overrides(args)
    g = load_graph_arg(args.spec, params)  # a file, a shipped name, or - (stdin)
    meta = str(args.device).strip().lower() == "meta"
    if args.output == "-":
        raise UsageError("build writes a file; '-' (stdout) is not supported for -o")
    out = Path(args.output) if args.output else Path("build") / f"{g.name}.safetensors"
    emit = Path(args.emit_python) if args.emit_python else None
    targets = ([] if meta else [out]) + ([emit] if emit else [])
    if len({os.path.abspath(t) for t in targets}) < len(targets):
        raise UsageError(f"-o and --emit-python name the same file: {out}")
    for target in targets:  # fail early; the final no-replace link decides (see write_all)
        if target.exists() and not args.force:
            raise UsageError(f"{target} exists; pass --force to overwrite it")
    options = BuildOptions(
        args.device,
        args.dtype,
        args.seed,
        max_memory=args.max_memory,
        progress=None,
        max_init_flops=args.max_init_flops,
    )
    model = build_graph(g, options)
    info(f"{g.name}: {len(g.nodes)} nodes on {args.device} ({args.dtype})")
    if not QUIET[0]:
        from archcomp.backends.torch.summary import renderable
        from archcomp.cli.output import show

        table = summarize(  # the build's own modules, its weights stood in for on meta
            g,
            model,
            dtype=args.dtype,
            optimizer=args.optimizer,
            checkpointing=args.activation_checkpointing,
            world_size=args.world_size,
        )
        show(renderable(table, args.depth, max_rows=BUILD_ROWS))
    outputs: list[tuple[Path, Writer]] = []
    if emit is not None:
        from archcomp.backends.torch.emit import emit_python

        source = emit_python(model)
        outputs.append((emit, lambda tmp: tmp.write_text(source)))
    if not meta:
        outputs.append((out, artifact_writer(model, label=out.name)))
    try:
        write_all(outputs, overwrite=args.force)  # every output, or none of them
    except OutputExists as exc:
        raise UsageError(f"{exc.filename} exists; pass --force to overwrite it") from None
    if emit is not None:
        info(f"wrote {emit}")
    if meta:
        info("device meta: no weights, so no artifact written")
        return 0
    info(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


cmd_build.configure = _configure_build  # type: ignore[attr-defined]
command("build", "compile a spec to PyTorch and write its weights as safetensors")(cmd_build)
