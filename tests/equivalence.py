"""Equivalence cases: compiled specs beside independent references with the weights copied in.

A :class:`Case` holds both sides; :func:`check_case` asserts the rule of tests/NUMERICS.md on
its forward outputs and gradients, :func:`check_compile_export_emit` checks torch.compile,
torch.export and the emitted source against the eager model. test_compiler_equivalence.py runs
the cases; test_numerics.py plants bugs in them; other tests reuse the checks.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numerics
import torch
from numerics import RoundingChains, Tolerance
from torch import nn

import archcomp
from archcomp.backends.torch.emit import emit_python

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(__file__).resolve().parent / "specs" / "models"


@dataclass
class Case:
    model: nn.Module  # compiled
    ref: nn.Module  # independent reference, same weights
    inputs: tuple[torch.Tensor, ...]
    ref_forward: Callable[..., Any]  # reference outputs, in the spec's output order
    grads: dict[str, Callable[[], torch.Tensor | None]]  # compiled param -> reference grad


@dataclass(frozen=True)
class Comparison:
    """One compared tensor: its relative RMS error and the rule's tolerance for it."""

    name: str
    error: float
    tol: Tolerance

    @property
    def ratio(self) -> float:
        return self.error / self.tol.value


def _outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    out = model(*inputs)
    return list(out.values()) if isinstance(out, dict) else [out]


def _loss(outs: list[torch.Tensor]) -> torch.Tensor:
    return sum((o.float() * torch.linspace(0.5, 1.5, o.numel()).view_as(o)).sum() for o in outs)  # type: ignore[return-value]


def compare_case(case: Case) -> list[Comparison]:
    """Forward outputs and every mapped gradient, compiled against reference.

    K is counted on both sides (the longer chain wins): the outputs' own chains for the
    forward, the whole forward and backward for the gradients. A gradient is measured against
    the model's gradient scale where it is smaller (see NUMERICS.md: cancelling sums).
    """
    model = case.model
    with RoundingChains() as chains:
        got = _outputs(model, case.inputs)
        want = case.ref_forward(*case.inputs)
        _loss(got).backward()
        _loss(want).backward()
    assert len(got) == len(want)
    dtype = want[0].dtype
    out_tol, grad_tol = chains.tolerance(dtype, *got, *want), chains.tolerance(dtype)
    result = [
        Comparison(f"output {i}", numerics.relative_error(g, w), out_tol)
        for i, (g, w) in enumerate(zip(got, want, strict=True))
    ]
    params = dict(model.named_parameters())
    for p in params.values():
        assert p.grad is not None
    assert case.grads, "compare at least one gradient"
    ref_grads = {name: ref_grad() for name, ref_grad in case.grads.items()}
    floor = numerics.rms(torch.cat([g.flatten() for g in ref_grads.values() if g is not None]))
    for name, ref_grad in ref_grads.items():
        assert ref_grad is not None, name
        error = numerics.relative_error(params[name].grad, ref_grad, floor)  # type: ignore[arg-type]
        result.append(Comparison(name, error, grad_tol))
    return result


def check_case(case: Case) -> list[Comparison]:
    """Assert the rule for every comparison of the case (shapes and dtypes too)."""
    got, want = _outputs(case.model, case.inputs), case.ref_forward(*case.inputs)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
    comparisons = compare_case(case)
    bad = [f"{c.name}: error {c.error:.2e} over {c.tol}" for c in comparisons if c.ratio > 1]
    assert not bad, "\n".join(bad)
    return comparisons


def check_compile_export_emit(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], tmp: Path
) -> None:
    model.eval()
    with torch.no_grad():
        with RoundingChains() as chains:
            want = _outputs(model, inputs)
        tol = chains.tolerance(want[0].dtype, *want)
        # nn.LSTM needs dynamo's allow_rnn (off by default in torch 2.13); others ignore it.
        with torch._dynamo.config.patch(allow_rnn=True):
            compiled = torch.compile(model, fullgraph=True, backend="eager")
            for g, w in zip(_outputs(compiled, inputs), want, strict=True):
                numerics.assert_close(g, w, tol, msg="torch.compile")
        with warnings.catch_warnings():
            # torch's own nn.LSTM re-assigns _flat_weights while tracing; nothing of ours.
            warnings.filterwarnings("ignore", message=".*_flat_weights.*assigned during export")
            exported = torch.export.export(model, inputs)
        for g, w in zip(_outputs(exported.module(), inputs), want, strict=True):
            numerics.assert_close(g, w, tol, msg="torch.export")
    source = emit_python(model)
    assert "archcomp" not in "\n".join(
        line for line in source.splitlines() if line.startswith(("import", "from"))
    )
    path = tmp / "emitted.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("emitted_model", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = next(v for k, v in vars(mod).items() if isinstance(v, type) and k == type(model).__name__)
    ejected = cls()
    ejected.load_state_dict(model.state_dict())
    ejected.eval()
    with torch.no_grad():
        for g, w in zip(_outputs(ejected, inputs), want, strict=True):
            numerics.assert_close(g, w, tol, msg="emitted source")


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


# -- MLP (ARCHITECTURES.md 1) -------------------------------------------------------------------


def mlp_case() -> Case:
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    model = archcomp.build(ROOT / "specs" / "mlp.yaml", seed=0)
    for dst, src in (("fc1", ref[0]), ("fc2", ref[2])):
        _copy(getattr(model, dst).weight, src.weight)
        _copy(getattr(model, dst).bias, src.bias)
    grads = {
        f"{d}.{p}": (lambda m=s, p=p: getattr(m, p).grad)
        for d, s in (("fc1", ref[0]), ("fc2", ref[2]))
        for p in ("weight", "bias")
    }
    return Case(model, ref, (torch.randn(4, 10),), lambda x: [ref(x)], grads)


# -- LeNet-5 (hand-written) ---------------------------------------------------------------------


class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)  # (B, 6, 14, 14)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # (B, 16, 5, 5)
        x = torch.flatten(x, 1)  # (B, 400)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def lenet_case() -> Case:
    torch.manual_seed(1)
    ref = LeNet5()
    model = archcomp.build(MODELS / "lenet5.yaml", seed=1)
    names = {"c1": ref.conv1, "c3": ref.conv2, "c5": ref.fc1, "f6": ref.fc2, "output": ref.fc3}
    grads = {}
    for dst, src in names.items():
        for p in ("weight", "bias"):
            _copy(getattr(getattr(model, dst), p), getattr(src, p))
            grads[f"{dst}.{p}"] = lambda m=src, p=p: getattr(m, p).grad
    return Case(model, ref, (torch.randn(3, 1, 28, 28),), lambda x: [ref(x)], grads)


# -- LSTM classifier ---------------------------------------------------------------------------


class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(10, 8, num_layers=2, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h0 = torch.zeros(2, x.size(0), 8)
        c0 = torch.zeros(2, x.size(0), 8)
        out, (h_n, _) = self.lstm(x, (h0, c0))
        return self.fc(out[:, -1, :]), h_n


def lstm_case() -> Case:
    torch.manual_seed(2)
    ref = LSTMClassifier()
    model = archcomp.build(MODELS / "lstm_classifier.yaml", seed=2)
    model.load_state_dict(ref.state_dict())
    grads = {n: (lambda p=p: p.grad) for n, p in ref.named_parameters()}
    return Case(model, ref, (torch.randn(4, 6, 10),), lambda x: list(ref(x)), grads)


# -- Transformer (torch.nn.Transformer with embeddings and projection around it) ------------------


def sinusoids(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float32)
    angle = pos / torch.pow(10000.0, i / d)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe


class RefTransformer(nn.Module):
    def __init__(
        self,
        vocab: int = 50,
        d: int = 32,
        h: int = 4,
        n: int = 2,
        ff: int = 64,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.d = d
        self.embed = nn.Embedding(vocab, d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nested-tensor advice irrelevant here
            self.transformer = nn.Transformer(
                d, h, n, n, ff, dropout=0.0, activation=activation, batch_first=True
            )
        self.generator = nn.Linear(d, vocab, bias=False)
        self.generator.weight = self.embed.weight

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        s = self.embed(src) * math.sqrt(self.d) + sinusoids(src.size(1), self.d)
        t = self.embed(tgt) * math.sqrt(self.d) + sinusoids(tgt.size(1), self.d)
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
        out = self.transformer(
            s,
            t,
            tgt_mask=mask,
            tgt_is_causal=True,
            src_key_padding_mask=src_pad,
            memory_key_padding_mask=src_pad,
        )
        return self.generator(out)


def _copy_mha(
    model: nn.Module, prefix: str, mha: nn.MultiheadAttention, grads: dict[str, Any]
) -> None:
    e = mha.embed_dim
    for k, proj in enumerate(("q_proj", "k_proj", "v_proj")):
        rows = slice(k * e, (k + 1) * e)
        _copy(model.get_parameter(f"{prefix}.{proj}.weight"), mha.in_proj_weight[rows])
        _copy(model.get_parameter(f"{prefix}.{proj}.bias"), mha.in_proj_bias[rows])
        grads[f"{prefix}.{proj}.weight"] = lambda r=rows: mha.in_proj_weight.grad[r]  # type: ignore[index]
        grads[f"{prefix}.{proj}.bias"] = lambda r=rows: mha.in_proj_bias.grad[r]  # type: ignore[index]
    for p in ("weight", "bias"):
        _copy(model.get_parameter(f"{prefix}.out_proj.{p}"), getattr(mha.out_proj, p))
        grads[f"{prefix}.out_proj.{p}"] = lambda p=p: getattr(mha.out_proj, p).grad


def _copy_module(model: nn.Module, prefix: str, src: nn.Module, grads: dict[str, Any]) -> None:
    for p, t in src.named_parameters():
        _copy(model.get_parameter(f"{prefix}.{p}"), t)
        grads[f"{prefix}.{p}"] = lambda t=t: t.grad


TRANSFORMER_NN = MODELS / "transformer_nn.yaml"


def transformer_spec(activation: str = "op: relu") -> str:
    """transformer_nn.yaml, with another feed-forward activation (written as a node's op)."""
    text = TRANSFORMER_NN.read_text()
    assert text.count("{id: relu, op: relu}") == 1
    return text.replace("{id: relu, op: relu}", f"{{id: relu, {activation}}}")


def transformer_case(spec: str | Path = TRANSFORMER_NN, activation: str = "relu") -> Case:
    """torch.nn.Transformer (``activation``) and the spec, which must compute the same."""
    torch.manual_seed(3)
    ref = RefTransformer(activation=activation)
    model = archcomp.build(spec, seed=3)
    grads: dict[str, Any] = {}
    _copy_module(model, "src_embed", ref.embed, grads)
    tr = ref.transformer
    for i, layer in enumerate(tr.encoder.layers):
        p = f"encoder.{i}"
        _copy_mha(model, f"{p}.self_attn", layer.self_attn, grads)
        _copy_module(model, f"{p}.ff.linear1", layer.linear1, grads)
        _copy_module(model, f"{p}.ff.linear2", layer.linear2, grads)
        _copy_module(model, f"{p}.norm1.norm", layer.norm1, grads)
        _copy_module(model, f"{p}.norm2.norm", layer.norm2, grads)
    _copy_module(model, "encoder_norm", tr.encoder.norm, grads)
    for i, layer in enumerate(tr.decoder.layers):
        p = f"decoder.{i}"
        _copy_mha(model, f"{p}.self_attn", layer.self_attn, grads)
        _copy_mha(model, f"{p}.cross_attn", layer.multihead_attn, grads)
        _copy_module(model, f"{p}.ff.linear1", layer.linear1, grads)
        _copy_module(model, f"{p}.ff.linear2", layer.linear2, grads)
        for k in (1, 2, 3):
            _copy_module(model, f"{p}.norm{k}.norm", getattr(layer, f"norm{k}"), grads)
    _copy_module(model, "decoder_norm", tr.decoder.norm, grads)
    src = torch.randint(0, 50, (2, 7))
    tgt = torch.randint(0, 50, (2, 5))
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True  # the second source sequence is two tokens shorter
    return Case(model, ref, (src, tgt, pad), lambda *a: [ref(*a)], grads)


# -- Layer norm on small activations (where its eps is visible) ---------------------------------

LAYER_NORM_SPEC = """
archcomp: 1
name: small_norm
params: {eps: 1.0e-5}
inputs: {x: [B, 16]}
nodes:
  - {id: norm, op: layer_norm, eps: "${eps}"}
  - {id: fc, op: linear, out_features: 4}
outputs: fc
"""


def layer_norm_case(spec: str = LAYER_NORM_SPEC) -> Case:
    """Activations of standard deviation 3e-3: variance ~ eps, so eps moves the output."""
    torch.manual_seed(4)
    ref = nn.Sequential(nn.LayerNorm(16, eps=1e-5), nn.Linear(16, 4))
    model = archcomp.build(spec, seed=4)
    with torch.no_grad():
        ref[0].weight.uniform_(0.5, 1.5)
        ref[0].bias.uniform_(-0.5, 0.5)
    grads = {}
    for dst, src in (("norm", ref[0]), ("fc", ref[1])):
        for p in ("weight", "bias"):
            _copy(getattr(getattr(model, dst), p), getattr(src, p))
            grads[f"{dst}.{p}"] = lambda m=src, p=p: getattr(m, p).grad
    x = 3e-3 * torch.randn(8, 16)
    return Case(model, ref, (x,), lambda x: [ref(x)], grads)


CASES: dict[str, Callable[[], Case]] = {
    "mlp": mlp_case,
    "lenet5": lenet_case,
    "lstm": lstm_case,
    "transformer": transformer_case,
    "transformer_gelu": lambda: transformer_case(transformer_spec("op: gelu"), "gelu"),
    "layer_norm": layer_norm_case,
}
