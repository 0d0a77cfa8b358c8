"""``archcomp export``: an artifact (or a spec's initial weights) -> a transformers folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from archcomp.cli.common import add_params_flag, command, overrides, spec_path
from archcomp.cli.output import info


def _configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        metavar="MODEL_OR_ARTIFACT",
        help="an artifact (.safetensors written by build or convert), or a spec to build (a "
        "file or a shipped spec's name)",
    )
    p.add_argument(
        "--to", required=True, choices=["hf"], help="the format: hf (transformers' folder)"
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="folder for config.json and weights"
    )
    p.add_argument(
        "--mapping",
        metavar="FILE",
        help="mapping file (default: the shipped mapping for the model's spec)",
    )
    add_params_flag(p)
    p.add_argument("--seed", type=int, default=0, help="seed when building a spec (default: 0)")
    p.add_argument("--force", action="store_true", help="replace config.json and weights in DIR")


def cmd_export(args: argparse.Namespace) -> int:
    from archcomp.api import build, load
    from archcomp.base.errors import UsageError
    from archcomp.checkpoints.export import save_pretrained

    if args.output == "-":
        raise UsageError("export writes a folder; '-' (stdout) is not supported for -o")
    source = Path(args.model)
    if source.suffix == ".safetensors":
        if args.param:
            raise UsageError("-p applies to a spec; an artifact's params are fixed")
        model = load(source)
    else:
        model = build(spec_path(args.model), overrides(args), seed=args.seed)
    out = save_pretrained(model, args.output, mapping=args.mapping, force=args.force)
    info(f"{model.name}: wrote {out / 'config.json'} and {out / 'model.safetensors'}")
    return 0


cmd_export.configure = _configure_export  # type: ignore[attr-defined]
command("export", "write an artifact as a transformers checkpoint folder (--to hf)")(cmd_export)
