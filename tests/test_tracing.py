"""torch.jit.trace, torch.export and torch.compile(fullgraph=True) on every shipped spec.

Each spec is built at the small sizes the spec tests use; the traced, exported and compiled
modules must compute what the eager module computes, within the tolerance of the longest
rounding chain behind each output (NUMERICS.md). torch.compile runs dynamo with the eager
backend: it checks that the whole forward is one graph without the cost of inductor.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numerics
import pytest
import torch
from numerics import RoundingChains
from spec_library import LIBRARY, example_inputs
from torch import nn

import archcomp


def _outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    out = model(*inputs)
    return list(out.values()) if isinstance(out, dict) else [out]


def test_every_shipped_spec_is_covered() -> None:
    shipped = {p.stem for p in Path(archcomp.__file__).parent.joinpath("specs").glob("*.yaml")}
    assert shipped == set(LIBRARY)


@pytest.mark.parametrize("tracer", ["jit.trace", "export", "compile"])
@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_traced_exported_and_compiled_match_eager(name: str, tracer: str) -> None:
    params = LIBRARY[name][1]
    g = archcomp.check(name, params)
    model = archcomp.build(name, params, seed=0).eval()
    inputs = tuple(example_inputs(g, torch.Generator().manual_seed(0)).values())
    with torch.no_grad():
        with RoundingChains() as chains:
            want = _outputs(model, inputs)
        tol = chains.tolerance(want[0].dtype, *want)
        with warnings.catch_warnings():
            # torch's own nn.LSTM re-assigns _flat_weights while exporting; nothing of ours.
            warnings.filterwarnings("ignore", message=".*_flat_weights.*")
            # torch 2.13 deprecates jit.trace, yet tools built on it (fvcore) still use it
            warnings.filterwarnings("ignore", message="`torch.jit.trace.*` is deprecated")
            # torch's own nn.RNN/LSTM test a tensor's truth while checking their inputs
            warnings.filterwarnings(
                "ignore", category=torch.jit.TracerWarning, module="torch.nn.modules.rnn"
            )
            # F.embedding checks padding_idx against the table's size (BART's, Whisper's pad)
            warnings.filterwarnings(
                "ignore", category=torch.jit.TracerWarning, module="torch.nn.functional"
            )
            # selective_scan loops over the positions: a trace records the example's length
            warnings.filterwarnings(
                "ignore", category=torch.jit.TracerWarning, module="archcomp.nn.scan"
            )
            if tracer == "jit.trace":
                # strict=False: a spec with several outputs returns a dict
                run: nn.Module = torch.jit.trace(model, inputs, strict=False)
            elif tracer == "export":
                run = torch.export.export(model, inputs).module()
            else:
                run = torch.compile(model, fullgraph=True, backend="eager")  # type: ignore[assignment]
            # nn.LSTM needs dynamo's allow_rnn (off by default in torch 2.13); others ignore it.
            with torch._dynamo.config.patch(allow_rnn=True):
                got = _outputs(run, inputs)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        numerics.assert_close(a, b, tol, msg=f"{tracer} {name}")


@pytest.mark.parametrize(
    ("name", "table"),
    [("gpt2", "max_len 16"), ("transformer", "max_len 5000"), ("llama", "max_len 16")],
)
def test_a_too_long_sequence_is_still_a_clear_error_in_eager_mode(name: str, table: str) -> None:
    """Learned positions (gpt2), sinusoids (transformer) and rotary tables (llama)."""
    params = {**LIBRARY[name][1]}
    g = archcomp.check(name, params)
    model = archcomp.build(name, params, seed=0).eval()
    inputs = dict(example_inputs(g, torch.Generator().manual_seed(0)))
    long = 5001 if name == "transformer" else 17
    for k, v in inputs.items():
        if v.dim() >= 2:  # (B, S) ids: repeat the positions past the table
            inputs[k] = v[:, :1].expand(v.shape[0], long, *v.shape[2:]).contiguous()
    with torch.no_grad(), pytest.raises(RuntimeError, match=f"exceeds .*{table}"):
        model(*inputs.values())
