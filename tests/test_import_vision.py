"""Import round trips of the vision and hand-written slice of issue 30, and the fixed point: a
shipped spec's built module -> archcomp.import_module -> a spec that builds to the same module
(the same state_dict keys and shapes, the same parameter count, outputs and gradients equal
under tests/NUMERICS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from equivalence import Case, check_case
from import_checks import round_trip
from numerics import RoundingChains, assert_close
from spec_library import LIBRARY, SPECS, example_inputs
from torch import nn

import archcomp
from archcomp.api import graph_of
from archcomp.cli.main import main


class ShippedCnn(nn.Module):
    """specs/cnn.yaml at its defaults, as its authors write it (one pool module, used twice)."""

    def __init__(self, classes: int = 10, hidden: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 8 * 8, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))  # (B, 32, 16, 16)
        x = self.pool(F.relu(self.conv2(x)))  # (B, 64, 8, 8)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))  # (B, 10)


class ShippedLstmClassifier(nn.Module):
    """specs/lstm_classifier.yaml at its defaults."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(10, 8, num_layers=2, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (B, S, 8)
        return self.fc(out[:, -1, :])  # (B, 2)


class Residual(nn.Module):
    """A residual MLP block; the first of a stage widens, through a projected shortcut."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.norm = nn.LayerNorm(d_out, eps=1e-6 if d_in == d_out else 1e-5)
        self.proj = nn.Linear(d_in, d_out, bias=False) if d_in != d_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.proj is None else self.proj(x)
        return F.relu(self.norm(self.fc(x)) + skip)


class Stage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Residual(6, 8), Residual(8, 8), Residual(8, 8)])
        self.head = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_copies_that_differ_become_one_block_reading_index() -> None:
    text = round_trip(Stage(), (torch.randn(4, 6),), dims={"B": 0})
    assert "- {id: blocks, op: residual, repeat: 3}" in text
    proj = '- {id: proj, op: linear, when: "${[True, False, False][index]}", out_features: 8'
    assert proj in text
    assert "- {id: add, op: add, in: [norm, proj]}" in text  # x where proj is absent
    assert 'eps: "${[1e-05, 1e-06, 1e-06][index]}"' in text
    assert '- {id: head, op: linear, repeat: 2, out_features: "${[8, 3][index]}"}' in text


def shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


@pytest.mark.parametrize(
    ("module", "spec", "example"),
    [
        (ShippedCnn, "cnn", (2, 3, 32, 32)),
        (ShippedLstmClassifier, "lstm_classifier", (2, 16, 10)),
    ],
)
def test_hand_written_shipped_model_imports_to_the_shipped_weights(
    module: type[nn.Module], spec: str, example: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    ref = module()
    text = round_trip(ref, (torch.randn(*example),), dims={"B": 0})
    shipped = archcomp.build(SPECS / f"{spec}.yaml", device="meta")
    imported = archcomp.build(text, device="meta")
    assert shapes(imported) == shapes(ref) == shapes(shipped)  # the same names, too
    assert sum(p.numel() for p in imported.parameters()) == LIBRARY[spec][0]


FIXED_POINT = ["cnn", "lstm_classifier", "mlp", "llama", "gpt2", "transformer", "bert_base"]
FIXED_POINT += ["mixtral", "whisper", "mamba", "bart", "t5", "convnext_tiny"]
FIXED_POINT += ["resnet18", "resnet50", "gemma2", "swin_tiny"]  # copies that differ by index


@pytest.mark.parametrize("name", FIXED_POINT)
def test_import_of_a_built_shipped_spec_is_a_fixed_point(name: str) -> None:
    params = LIBRARY[name][1]
    graph = graph_of(SPECS / f"{name}.yaml", params)
    built = archcomp.build(SPECS / f"{name}.yaml", params=params, seed=0)
    inputs = tuple(example_inputs(graph, torch.Generator().manual_seed(1)).values())
    text = archcomp.import_module(built, inputs)
    again = archcomp.build(text)
    assert shapes(again) == shapes(built)
    count = sum(p.numel() for p in built.parameters())  # ties kept: no extra weights
    assert sum(p.numel() for p in again.parameters()) == count
    again.load_state_dict(built.state_dict(), strict=True)
    frozen = {n for n, p in again.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, p in built.named_parameters() if not p.requires_grad}
    twice = archcomp.import_module(again, inputs)  # and importing again: the same, up to names
    assert len(twice.splitlines()) == len(text.splitlines())
    assert shapes(archcomp.build(twice, device="meta")) == shapes(again)
    if frozen:  # whisper's sinusoid table: no gradient to compare
        with torch.no_grad(), RoundingChains() as chains:
            got, want = again(*inputs), built(*inputs)
        assert_close(got, want, chains.tolerance(torch.float32, got, want))
        return
    built.eval(), again.eval()  # bart and t5 keep dropout at their small sizes
    case = Case(
        again,
        built,
        inputs,
        lambda *xs: [built(*xs)] if not isinstance(out := built(*xs), dict) else list(out.values()),
        {n: (lambda n=n: built.get_parameter(n).grad) for n, _ in again.named_parameters()},
    )
    check_case(case)


VISION = {  # family -> (config class, architecture, config, lines the refusal must list)
    "resnet": (
        "ResNetConfig",
        "ResNetForImageClassification",
        dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], layer_type="basic"),
        [
            # its ResNetConvLayers with and without an activation merge (when by index), and
            # a stage's layers that call those different runs (importer/nested.py); the stages
            # then differ in a merged block and a plain one, which nothing merges yet
            "self.resnet.encoder.stages.1 (its path is no node id",
            "self.classifier.1 (its path is no node id",
        ],
    ),
    "convnext": (
        "ConvNextConfig",
        "ConvNextForImageClassification",
        dict(num_stages=2, hidden_sizes=[8, 16], depths=[1, 2], image_size=32),
        [  # its layer_scale_parameter, bare, is a parameter node now (test_import_params.py)
            "convnext.embeddings.layernorm: aten.layer_norm.default (no archcomp op for it)",
            "stages.1.downsampling_layer.1 (its path is no node id",
        ],
    ),
    # Swin round-trips (tests/test_import_swin.py); two stages stop at the stage merge there
    "mamba": (
        "MambaConfig",
        "MambaForCausalLM",
        dict(vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2),
        [  # A_log and D, bare, are parameter nodes now; the scan's other calls are not
            "(reads the tensor backbone.layers.0.mixer.conv1d.weight directly) at modeling_mamba",
            "aten.split_with_sizes.default (no archcomp op for it) at modeling_mamba.py:",
        ],
    ),
}
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)


@pytest.mark.parametrize("family", list(VISION))
def test_hf_vision_and_mamba_refusals_list_each_call_with_its_line(
    family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Traced on pixel_values [B, num_channels, image_size, image_size] built from config.json
    (Mamba on input_ids); what no op expresses yet is listed, never approximated."""
    transformers = pytest.importorskip("transformers")
    config_cls, arch, extra, lines = VISION[family]
    cls = getattr(transformers, config_cls)
    known = set(cls().to_dict())
    cfg = cls(**({k: v for k, v in TINY.items() if k in known} | extra))
    cfg.architectures = [arch]
    cfg.save_pretrained(tmp_path)  # config.json only: import --hf reads no weights
    assert main(["import", "--hf", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot import" in err
    for line in lines:
        assert line in err


def test_hf_layers_of_two_kinds_become_one_block_reading_index(tmp_path: Path) -> None:
    """Qwen2 with a full and a sliding-window layer (config.layer_types): one decoder block
    whose attention's window is the copy's, logits equal to transformers'."""
    pytest.importorskip("transformers")
    from import_checks import logits_equal, saved

    from archcomp.importer.hf import import_hf

    kinds = ["full_attention", "sliding_attention"]
    ref, folder = saved(
        tmp_path, "Qwen2", use_sliding_window=True, sliding_window=4, layer_types=kinds
    )
    text = import_hf(folder)
    assert 'window: "${[0, 4][index]}"' in text  # a block param, or the attention's
    assert text.count("qwen2_decoder_layer") == 2  # the block and its one call
    model = archcomp.build(text)
    model.load_state_dict(ref.state_dict(), strict=True)
    logits_equal(model.eval(), ref)
