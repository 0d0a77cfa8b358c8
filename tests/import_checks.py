"""Checks the import tests share: a torch module's round trip through archcomp.import_module
(tests/test_import.py, tests/test_import_vision.py) and a saved transformers decoder with its
logits compared (tests/test_import_hf.py, tests/test_import_vision.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from equivalence import Case, check_case
from hf_models import quiet
from lowering import redraw
from numerics import RoundingChains, assert_close
from torch import nn

import archcomp
from archcomp.cli.main import main


def round_trip(ref: nn.Module, inputs: tuple[torch.Tensor, ...], **kw: Any) -> str:
    """Import ``ref``, build the spec, load ref's state_dict strictly, compare; the spec text."""
    torch.manual_seed(0)
    text = archcomp.import_module(ref, inputs, **kw)
    archcomp.check(text)
    model = archcomp.build(text)
    model.load_state_dict(ref.state_dict(), strict=True)
    ref.train(model.training)
    case = Case(
        model,
        ref,
        inputs,
        lambda *xs: [ref(*xs)],
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)
    return text


SMALL = dict(
    num_hidden_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=48,
    vocab_size=61,
    max_position_embeddings=16,
    rms_norm_eps=1e-6,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)


def saved(tmp_path: Path, family: str, **config: Any) -> tuple[Any, Path]:
    """A re-drawn transformers ``<family>ForCausalLM`` and the folder it is saved in."""
    import transformers

    quiet()
    cfg = getattr(transformers, f"{family}Config")(**{**SMALL, **config})
    model = getattr(transformers, f"{family}ForCausalLM")(cfg)
    redraw(model, 3)
    folder = tmp_path / family.lower()
    model.save_pretrained(folder)
    return model.eval(), folder


def logits_equal(model: Any, ref: Any) -> None:
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(input_ids=ids), ref(input_ids=ids).logits
    got = got["logits"] if isinstance(got, dict) else got
    assert_close(got, want, chains.tolerance(torch.float32, got, want))


class Read(nn.Module):
    """``model`` with the parameters in ``skip`` (read by no node) left out of
    ``named_parameters``: the gradients compared are those an output has."""

    def __init__(self, model: nn.Module, skip: set[str]) -> None:
        super().__init__()
        self.model, self.skip = model, skip

    def forward(self, *xs: torch.Tensor, **kw: torch.Tensor) -> object:
        return self.model(*xs, **kw)

    def named_parameters(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def,override]
        return ((n, p) for n, p in self.model.named_parameters() if n not in self.skip)


def cli_round_trip(tmp_path: Path, folder: Path) -> tuple[str, Any]:
    """``archcomp import --hf`` then ``archcomp convert --spec``: the spec and the model."""
    spec, art = tmp_path / "spec.yaml", tmp_path / "weights.safetensors"
    assert main(["import", "--hf", str(folder), "-o", str(spec)]) == 0
    assert main(["convert", str(folder), "--spec", str(spec), "-o", str(art)]) == 0
    return spec.read_text(), archcomp.load(art).eval()
