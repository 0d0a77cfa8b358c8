"""``archcomp generate``: text from a decoder checkpoint or artifact, streamed to stdout; an
encoder-decoder of text (T5, BART) reads the prompt as its source and writes its output."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from archcomp.base.errors import UsageError
from archcomp.cli.common import command
from archcomp.cli.output import QUIET

TOKENIZER = "tokenizer.json"


def _configure_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        metavar="CHECKPOINT_OR_ARTIFACT",
        help="a transformers checkpoint folder (config.json, safetensors, tokenizer.json) or an "
        "artifact (.safetensors written by build or convert, tokenizer.json beside it)",
    )
    p.add_argument("--prompt", required=True, metavar="TEXT", help="the text to continue")
    p.add_argument(
        "--max-new-tokens", type=int, default=64, metavar="N", help="tokens to add (default 64)"
    )
    p.add_argument(
        "--temperature", type=float, metavar="T", help="sample at this temperature (> 0)"
    )
    p.add_argument("--top-k", type=int, metavar="K", help="sample among the K likeliest tokens")
    p.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        help="sample from the smallest set holding P of the mass",
    )
    p.add_argument("--seed", type=int, metavar="S", help="seed of the sampling (reproducible)")
    p.add_argument("--device", default="cpu", metavar="D", help="cpu, cuda, cuda:N, mps (cpu)")
    p.add_argument(
        "--dtype", default=None, metavar="T", help="float32, float16, bfloat16, float64 (as stored)"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="compile the one-token decode step with torch.compile (worth it for long outputs)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="FILE",
        help="the tokenizer.json to use (default: the checkpoint's, or the artifact's neighbour)",
    )


def _tokenizer(args: argparse.Namespace, folder: Path) -> Any:
    """The ``tokenizers`` tokenizer of the checkpoint (a :class:`UsageError` when the library
    or the file is missing or unreadable)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UsageError(
            "generate needs the 'tokenizers' library: pip install 'archcomp[generate]'"
        ) from None
    path = Path(args.tokenizer) if args.tokenizer else folder / TOKENIZER
    if not path.is_file():
        raise UsageError(
            f"{path}: no such tokenizer file; generate reads the checkpoint's {TOKENIZER} "
            "(or pass --tokenizer FILE)"
        )
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the library's own errors: a bad or foreign file
        raise UsageError(f"{path}: not a tokenizers tokenizer.json: {exc}") from None


def _eos(folder: Path) -> int | list[int] | None:
    """The end-of-sequence id(s) of config.json (generation_config.json first), if any."""
    for name in ("generation_config.json", "config.json"):
        try:
            value = json.loads((folder / name).read_text()).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) or (
            isinstance(value, list) and all(isinstance(v, int) for v in value)
        ):
            return value
    return None


def _model(args: argparse.Namespace) -> tuple[Any, Path]:
    from archcomp.api import from_pretrained, load

    source = Path(args.model)
    if source.suffix == ".safetensors":
        if not source.is_file():
            raise UsageError(f"{source}: no such artifact")
        return load(source, args.device, args.dtype), source.parent
    if not source.is_dir():
        raise UsageError(f"{source}: neither a checkpoint folder nor a .safetensors artifact")
    return from_pretrained(source, None, args.device, args.dtype), source


def _check(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, not {args.max_new_tokens}")
    if args.temperature is not None and args.temperature <= 0:
        raise UsageError(f"--temperature must be > 0, not {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, not {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1], not {args.top_p}")


class _Stream:
    """Writes the text of the tokens generated so far as it grows: prompt and continuation are
    decoded together (the space between them, a character split across tokens) and what the
    text gained is printed."""

    def __init__(self, tokenizer: Any, prompt: list[int]) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt)
        self.text = tokenizer.decode(self.ids)

    def __call__(self, token: Any) -> None:
        self.ids.append(int(token[0]))
        self.flush(final=False)

    def flush(self, final: bool = True) -> None:
        text = self.tokenizer.decode(self.ids)
        if text.startswith(self.text) and (final or not text.endswith("\ufffd")):
            sys.stdout.write(text[len(self.text) :])
            sys.stdout.flush()
            self.text = text


def _source_of(model: Any, args: argparse.Namespace) -> bool:
    """Whether the prompt is an encoder-decoder's source (T5, BART: the output is the decoder's
    text, not a continuation); refuses an encoder of other inputs than token ids (Whisper)."""
    from archcomp.backends.torch.seq2seq import is_encoder_decoder, split

    if not is_encoder_decoder(model):
        return False
    inputs = split(model).encoder_inputs
    if inputs[:1] != ("input_ids",) or not set(inputs) <= {"input_ids", "attention_mask"}:
        raise UsageError(
            f"{args.model}: generate from text needs an encoder of token ids; "
            f"{model.name}'s takes {list(inputs)} (use model.generate in Python)"
        )
    return True


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from archcomp.nn.kv_cache import CacheUnsupported

    _check(args)
    model, folder = _model(args)
    seq2seq = _source_of(model, args)
    tokenizer = _tokenizer(args, folder)
    ids = tokenizer.encode(args.prompt).ids
    if not ids:
        raise UsageError("--prompt is empty after tokenization")
    input_ids = torch.tensor([ids], dtype=torch.int64, device=next(model.parameters()).device)
    sample = any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    stream = _Stream(tokenizer, [] if seq2seq else ids)  # a source is not repeated
    if not seq2seq:
        sys.stdout.write(args.prompt)
    start = time.perf_counter()
    try:
        out = model.generate(
            input_ids,
            args.max_new_tokens,
            do_sample=sample,
            temperature=args.temperature or 1.0,
            top_k=args.top_k,
            top_p=args.top_p,
            eos_token_id=_eos(folder),
            seed=args.seed,
            callback=stream,
            compile=args.compile,
        )
    except (CacheUnsupported, ValueError) as exc:
        raise UsageError(f"{args.model}: cannot generate: {exc}") from None
    except IndexError:  # the embedding's lookup of an id past its table
        raise UsageError(
            f"{args.model}: the tokenizer's ids exceed the model's vocabulary"
        ) from None
    seconds = time.perf_counter() - start
    new = out.size(1) - (1 if seq2seq else input_ids.size(1))  # a decoder's start token: 1
    stream.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not QUIET[0]:  # on stderr: stdout is the text alone
        rate = f"{new / seconds:.1f}" if seconds > 0 else "inf"
        print(
            f"{new} tokens in {seconds:.2f} s: {rate} tokens/s (prompt {len(ids)})", file=sys.stderr
        )
    return 0


cmd_generate.configure = _configure_generate  # type: ignore[attr-defined]
command("generate", "continue a prompt with a decoder checkpoint or artifact")(cmd_generate)
