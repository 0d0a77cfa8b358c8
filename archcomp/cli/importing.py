"""``archcomp import``: a PyTorch module of the user's own code back into a spec (docs/import.md).

It imports and runs the Python code the user names (``PACKAGE.MODULE:FACTORY``), as ``python
-c`` would; never code read from a spec."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from archcomp.base.errors import UsageError
from archcomp.base.text import visible
from archcomp.cli.common import command
from archcomp.cli.output import info

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
_INPUT = re.compile(r"^([A-Za-z_]\w*)=\[?(\d+(?:[,x]\d+)*)?\]?(?::(\w+))?$")


def _configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Trace a PyTorch module and write it as a spec. WARNING: this imports and runs the "
        "Python code you name (PACKAGE.MODULE and its FACTORY, with the current directory on "
        "the import path), as python would; run it only on code you trust. Nothing of a "
        "spec is ever run. With --hf, the transformers class a checkpoint folder's "
        "config.json names is built on the meta device (no weight is read) and imported."
    )
    p.add_argument(
        "factory",
        nargs="?",
        metavar="PACKAGE.MODULE:FACTORY",
        help="a callable with no arguments that returns the nn.Module (a class or a function)",
    )
    p.add_argument(
        "--hf",
        metavar="CHECKPOINT_FOLDER",
        help="import the transformers model of this folder's config.json instead (needs "
        "transformers; weights then load with archcomp convert FOLDER --spec SPEC)",
    )
    p.add_argument(
        "--attention-mask",
        action="store_true",
        help="with --hf, a decoder's padding attention_mask as a second input (B, T) of ones "
        "and zeros: each attention's key_padding_mask beside causal (Llama's family)",
    )
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=SHAPE[:DTYPE]",
        help="an example input of the forward, by argument name (repeatable), e.g. "
        f"x=2,3,32,32 or ids=2,16:int64; dtypes: {', '.join(DTYPES)} (default float32)",
    )
    p.add_argument(
        "--dims",
        default="",
        metavar="B=0,T=ids.1",
        help="name symbolic dims: B=0 is dim 0 of every input, T=ids.1 dim 1 of input ids, "
        "T=tgt.1,T=tgt_mask.0 several dims (default: every size literal)",
    )
    p.add_argument("--name", help="the spec's name (default: the class name in snake_case)")
    p.add_argument("-o", "--output", metavar="FILE", help="the spec file (default: stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing FILE")


def cmd_import(args: argparse.Namespace) -> int:
    from archcomp.base.fileio import write_bytes_atomic
    from archcomp.importer import import_module

    out = Path(args.output) if args.output and args.output != "-" else None
    if out is not None and out.exists() and not args.force:
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    if args.hf is not None:
        from archcomp.importer.hf import import_hf

        if args.factory is not None or args.input or args.dims:
            raise UsageError("--hf imports a checkpoint folder: give no FACTORY, --input or --dims")
        text = import_hf(args.hf, name=args.name, attention_mask=args.attention_mask)
    else:
        if args.attention_mask:
            raise UsageError("--attention-mask goes with --hf")
        if args.factory is None:
            raise UsageError("give PACKAGE.MODULE:FACTORY, or --hf CHECKPOINT_FOLDER")
        module = _factory(args.factory)
        text = import_module(module, _inputs(args.input), dims=_dims(args.dims), name=args.name)
    if out is None:
        sys.stdout.write(text)
    else:
        write_bytes_atomic(out, text.encode(), overwrite=args.force)
        info(f"wrote {out}")
    return 0


cmd_import.configure = _configure  # type: ignore[attr-defined]
command("import", "a PyTorch module (your own code, run) or a transformers folder into a spec")(
    cmd_import
)


def _inputs(specs: list[str]) -> dict[str, Any]:
    import torch

    if not specs:
        raise UsageError("give the example inputs: --input NAME=SHAPE[:DTYPE], e.g. x=2,10")
    inputs: dict[str, Any] = {}
    for text in specs:
        m = _INPUT.match(text)
        if m is None or m.group(2) is None:
            raise UsageError(
                f"--input '{visible(text[:80])}': expected NAME=SHAPE[:DTYPE], e.g. x=2,3,32,32"
            )
        name, shape, dtype = m.group(1), [int(s) for s in re.split("[,x]", m.group(2))], m.group(3)
        if name in inputs:
            raise UsageError(f"--input {name}: given twice; one --input per argument")
        if dtype not in (None, *DTYPES):
            raise UsageError(f"--input {name}: unknown dtype '{dtype}'; one of {', '.join(DTYPES)}")
        if not all(1 <= s <= 1 << 16 for s in shape) or len(shape) > 8:
            raise UsageError(f"--input {name}: sizes from 1 to 65536, at most 8 dims")
        dt = getattr(torch, dtype or "float32")
        # Example values only trace the forward: ids are zeros (valid for any vocabulary).
        inputs[name] = (
            torch.randn(shape, dtype=dt) if dt.is_floating_point else torch.zeros(shape, dtype=dt)
        )
    return inputs


def _dims(text: str) -> dict[str, int | tuple[str, int] | list[tuple[str, int]]]:
    """``B=0,T=tgt.1,T=tgt_mask.0``: a name given again at INPUT.DIM names several dims."""
    dims: dict[str, int | tuple[str, int] | list[tuple[str, int]]] = {}
    for part in filter(None, text.split(",")):
        m = re.match(r"^([A-Za-z_]\w*)=(?:([A-Za-z_]\w*)\.)?(-?\d+)$", part.strip())
        if m is None:
            raise UsageError(f"--dims '{visible(part[:40])}': expected NAME=DIM or NAME=INPUT.DIM")
        name, at = m.group(1), (m.group(2), int(m.group(3))) if m.group(2) else int(m.group(3))
        had = dims.get(name)
        if had is None:
            dims[name] = at
        elif isinstance(had, int) or isinstance(at, int):
            raise UsageError(f"--dims names {name} twice: give each place as INPUT.DIM")
        else:
            dims[name] = [*(had if isinstance(had, list) else [had]), at]
    return dims


def _factory(target: str) -> Any:
    """Import PACKAGE.MODULE and call FACTORY(): the user's own code, run as python would."""
    import importlib

    from torch import nn

    m = re.match(r"^([A-Za-z_][\w.]*):([A-Za-z_]\w*)$", target)
    if m is None:
        raise UsageError(f"'{visible(target[:80])}': expected PACKAGE.MODULE:FACTORY")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` has it
    try:
        factory = getattr(importlib.import_module(m.group(1)), m.group(2))
        module = factory()
    except Exception as e:  # the user's code: its failure is the user's to read, in one line
        raise UsageError(f"{target}: {type(e).__name__}: {e}") from None
    if not isinstance(module, nn.Module):
        raise UsageError(f"{target}() returned {type(module).__name__}, not an nn.Module")
    return module
