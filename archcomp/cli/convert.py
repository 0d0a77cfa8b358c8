"""``archcomp convert``: a transformers checkpoint folder -> an archcomp artifact."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from archcomp.base.errors import UsageError
from archcomp.base.fileio import free_space
from archcomp.base.units import fmt_bytes
from archcomp.cli.common import command, overrides, spec_path
from archcomp.cli.output import info


def _configure_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="folder with config.json and model.safetensors (or model.safetensors.index.json)",
    )
    p.add_argument(
        "--spec",
        metavar="SPEC",
        help="the spec to load the weights into, a file or a shipped spec's name (default: the "
        "mapping's spec)",
    )
    p.add_argument(
        "--mapping",
        metavar="FILE",
        help="mapping file (default: the shipped mapping for config.json's model_type)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="artifact path (default: build/<spec name>.safetensors)",
    )
    p.add_argument(
        "--dtype",
        default=None,
        help="cast the weights to float32, float16, bfloat16 or float64 (default: as stored)",
    )
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="refuse checkpoints whose weights exceed SIZE (e.g. 8GB, 512MiB), checked before "
        "any tensor is read; the free memory and the output's free disk are always checked",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing artifact")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a spec param the checkpoint does not fix (repeatable), e.g. -p image=384",
    )


def cmd_convert(args: argparse.Namespace) -> int:
    from archcomp.backends.torch.artifact import save_artifact
    from archcomp.backends.torch.module import count_params
    from archcomp.checkpoints.load import from_pretrained

    if args.output == "-":
        raise UsageError("convert writes a file; '-' (stdout) is not supported for -o")
    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not args.force:  # early; the final link decides
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    spec = spec_path(args.spec) if args.spec is not None else None
    model = from_pretrained(
        args.checkpoint,
        spec,
        "cpu",
        args.dtype,
        mapping=args.mapping,
        max_memory=args.max_memory,
        params=overrides(args),
        return_dict=False,  # never called: written as an artifact
    )
    if out is None:
        out = Path("build") / f"{model.name}.safetensors"
        if out.exists() and not args.force:
            raise UsageError(f"{out} exists; pass --force to overwrite it")
    check_disk(out, state_bytes(model))
    dtype = next((str(p.dtype).removeprefix("torch.") for p in model.parameters()), "float32")
    info(f"{model.name}: {count_params(model):,} parameters ({dtype}) from {args.checkpoint}")
    save_artifact(model, out, overwrite=args.force)  # without --force, refused atomically
    info(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


def state_bytes(model: Any) -> int:
    """The bytes of a model's tensors as a file holds them (tied ones counted once)."""
    seen: dict[int, int] = {}
    for t in model.state_dict().values():
        seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def check_disk(out: Path, need: int) -> None:
    """Refuse to start writing ``need`` bytes to ``out`` when its disk has less free."""
    free = free_space(out)
    if free is not None and need > free:
        raise UsageError(
            f"{out} would take about {fmt_bytes(need)}, but its disk has {fmt_bytes(free)} free"
        )


cmd_convert.configure = _configure_convert  # type: ignore[attr-defined]
command("convert", "load a transformers checkpoint folder into its spec and write an artifact")(
    cmd_convert
)
