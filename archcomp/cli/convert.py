"""``archcomp convert``: a transformers checkpoint folder -> an archcomp artifact."""

from __future__ import annotations

import argparse
from pathlib import Path

from archcomp.base.errors import UsageError
from archcomp.cli.common import command, spec_path
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
    p.add_argument("--force", action="store_true", help="overwrite an existing artifact")


def cmd_convert(args: argparse.Namespace) -> int:
    from archcomp.backends.torch.artifact import save_artifact
    from archcomp.backends.torch.module import count_params
    from archcomp.checkpoints.load import from_pretrained

    if args.output == "-":
        raise UsageError("convert writes a file; '-' (stdout) is not supported for -o")
    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not args.force:
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    spec = spec_path(args.spec) if args.spec is not None else None
    model = from_pretrained(args.checkpoint, spec, "cpu", args.dtype, mapping=args.mapping)
    if out is None:
        out = Path("build") / f"{model.name}.safetensors"
        if out.exists() and not args.force:
            raise UsageError(f"{out} exists; pass --force to overwrite it")
    dtype = next((str(p.dtype).removeprefix("torch.") for p in model.parameters()), "float32")
    info(f"{model.name}: {count_params(model):,} parameters ({dtype}) from {args.checkpoint}")
    save_artifact(model, out, overwrite=True)
    info(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


cmd_convert.configure = _configure_convert  # type: ignore[attr-defined]
command("convert", "load a transformers checkpoint folder into its spec and write an artifact")(
    cmd_convert
)
