"""Import round trips of the vision and hand-written slice of issue 30, and the fixed point: a
shipped spec's built module -> archcomp.import_module -> a spec that builds to the same module
(the same state_dict keys and shapes, the same parameter count, outputs and gradients equal
under tests/NUMERICS.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from equivalence import Case, check_case
from hf_models import quiet
from import_checks import Read, round_trip
from lowering import redraw
from numerics import RoundingChains, assert_close
from spec_library import LIBRARY, SPECS, example_inputs
from torch import nn

import archcomp
from archcomp.api import graph_of
from archcomp.cli.main import main
from archcomp.importer.hf import import_hf


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


class Dense(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Layer(nn.Module):
    """A pre-norm residual layer whose feed-forward ``ff`` is a Dense block in the first
    layers and one Linear in the others (DeepSeek-V3's dense and MoE ``mlp``)."""

    def __init__(self, dense: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.ff = Dense() if dense else nn.Linear(8, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff(self.norm(x))


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(dense=i < 2) for i in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def test_copies_whose_node_calls_another_op_become_alternatives() -> None:
    """``layers.0.ff.up.weight`` and ``layers.2.ff.weight``: one id, two nodes by ``when``."""
    text = round_trip(Stack(), (torch.randn(3, 8),), dims={"B": 0})
    assert '- {id: ff, op: dense, when: "${index < 2}"}' in text
    assert '- {id: ff, op: linear, in: norm, when: "${index >= 2}", out_features: 8' in text
    assert "- {id: layers, op: layer, repeat: 4}" in text


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
FIXED_POINT += ["gemma3_text", "deepseek_v3"]  # copies that cannot be one: nodes 0, 1, ...
FIXED_POINT += ["vit_b16", "dinov2_base", "clip_vit_b32"]  # tokens.size(0); F.interpolate
FIXED_POINT += ["linear_regression", "lenet5", "rnn", "gpt3", "mistral", "qwen2", "qwen3"]
FIXED_POINT += ["olmo2", "phi3", "gpt_neox"]


def test_the_fixed_point_covers_every_shipped_spec() -> None:
    assert sorted(FIXED_POINT) == sorted(LIBRARY) == sorted(p.stem for p in SPECS.glob("*.yaml"))


def unused_ids(text: str) -> set[str]:
    """The ids of the parameter and buffer nodes a spec holds with ``unused: true``."""
    return set(re.findall(r"\{id: (\w+), op: (?:parameter|buffer)\b[^}]*unused: true", text))


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
    unread = {n for n in shapes(again) if n.rsplit(".", 2)[-2] in unused_ids(text)}
    read = Read(again, unread)  # dinov2's mask_token: held (unused: true), no gradient
    case = Case(
        read,
        built,
        inputs,
        lambda *xs: [built(*xs)] if not isinstance(out := built(*xs), dict) else list(out.values()),
        {n: (lambda n=n: built.get_parameter(n).grad) for n, _ in read.named_parameters()},
    )
    check_case(case)


VISION = {  # family -> (config class, architecture, config, lines the refusal must list)
    "swinv2": (  # ResNet, ConvNeXt, Swin (test_import_swin.py) and Mamba round-trip
        "Swinv2Config",
        "Swinv2ForImageClassification",
        dict(image_size=16, patch_size=2, embed_dim=8, depths=[1, 2], num_heads=[2, 4])
        | {"window_size": 2},
        [  # Swin V2's continuous position bias (a small MLP over log-spaced offsets)
            "Swinv2SelfAttention self.swinv2.encoder.layers.0.blocks.0.attention.self (attention "
            "that also computes continuous_position_bias_mlp) at modeling_swinv2.py:",
        ],
    ),
}
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)


@pytest.mark.parametrize("family", list(VISION))
def test_hf_vision_refusals_list_each_call_with_its_line(
    family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Traced on pixel_values [B, num_channels, image_size, image_size] built from config.json;
    what no op expresses yet is listed, never approximated."""
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


CNNS = {  # family -> (config class, architecture, config, image size, lines the spec must have)
    "resnet": (
        "ResNetConfig",
        "ResNetForImageClassification",
        dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], layer_type="basic"),
        224,  # config.json gives no image size: traced at 224
        [  # stage 0's one layer and stage 1's (the first strides, with a shortcut): alternatives
            '      - {id: layers, op: res_net_basic_layer, when: "${index < 1}", repeat: 1}\n'
            "      - {id: layers, op: res_net_basic_layer_4, in: x, "
            'when: "${index >= 1}", repeat: 2,\n'
            '         convolution_stride: "${[[2, 1], [1, 1]][index]}"',
            "      - {id: '0', op: flatten}\n      - {id: '1', op: linear, out_features: 3}",
            "  - {id: classifier, op: classifier}",  # Sequential(Flatten, Linear), nodes 0 and 1
        ],
    ),
    "resnet_bottleneck": (
        "ResNetConfig",
        "ResNetForImageClassification",
        dict(embedding_size=8, hidden_sizes=[16, 32], depths=[2, 1], layer_type="bottleneck"),
        64,
        [],
    ),
    "convnext": (
        "ConvNextConfig",
        "ConvNextForImageClassification",
        dict(num_stages=2, hidden_sizes=[8, 16], depths=[1, 2]),
        32,
        [  # the channels-first ConvNextLayerNorm as the shipped convnext spec writes it
            "      - {id: channels_last, op: permute, dims: [0, 2, 3, 1]}\n"
            "      - {id: layernorm, op: layer_norm, eps: 1.0e-06}\n"
            "      - {id: channels_first, op: permute, dims: [0, 3, 1, 2]}",
            "      - {id: '0', op: layer_norm, eps: 1.0e-06}",  # downsampling_layer.0.weight
            "      - {id: '1', op: conv2d, out_channels: 16, kernel_size: 2, stride: 2}",
            "      - {id: downsampling_layer, op: downsampling_layer, "
            'when: "${downsampling_layer_when}"}',
            # its config's num_hidden_layers counts the stages (len(depths)): no repeat's param;
            # the stages' other widths and depths, one block with params
            "      - {id: stages, op: conv_next_stage, repeat: 2,",
            '      - {id: layers, op: conv_next_layer, repeat: "${layers_repeat}",',
        ],
    ),
}


def _redrawn_stats(model: nn.Module, seed: int) -> None:
    """BatchNorm's running statistics re-drawn too (eval mode reads them): means ~ N(0, 0.5),
    variances in [0.5, 1.5)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.5 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


@pytest.mark.parametrize("family", list(CNNS))
def test_hf_cnn_round_trip_from_the_cli(family: str, tmp_path: Path) -> None:
    """ResNet (basic and bottleneck layers) and ConvNeXt: `import --hf`, then `convert --spec`
    of the saved folder; logits equal to transformers' in eval mode, and every gradient, with
    transformers' own state_dict (running statistics included) loaded strictly."""
    transformers = pytest.importorskip("transformers")
    from hf_models import quiet
    from lowering import redraw

    config_cls, arch, extra, size, lines = CNNS[family]
    quiet()
    cfg = getattr(transformers, config_cls)(**extra, num_labels=3, image_size=size)
    cfg.architectures = [arch]
    ref = getattr(transformers, arch)(cfg)
    redraw(ref, 3)
    _redrawn_stats(ref, 4)
    ref.save_pretrained(tmp_path / family)
    spec, art = tmp_path / f"{family}.yaml", tmp_path / f"{family}.safetensors"
    assert main(["import", "--hf", str(tmp_path / family), "-o", str(spec)]) == 0
    assert main(["convert", str(tmp_path / family), "--spec", str(spec), "-o", str(art)]) == 0
    text = spec.read_text()
    for line in lines:
        assert line in text
    ref.eval()
    pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))  # B=3
    with torch.no_grad(), RoundingChains() as chains:
        got, want = archcomp.load(art).eval()(pixel_values=pixels), ref(pixel_values=pixels).logits
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
    model = archcomp.build(text).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    case = Case(
        model,
        ref,
        (pixels,),
        lambda x: [ref(pixel_values=x).logits],
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)


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


class ClassToken(nn.Module):
    """A class token expanded to the batch by sizes read from tensors (``x.size(0)`` and
    ``x.shape[0]``), prepended to projected patches."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(6, d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))
        self.reg_token = nn.Parameter(torch.randn(1, 1, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x)  # (B, T, d)
        cls = self.cls_token.expand(tokens.size(0), -1, -1)
        reg = self.reg_token.expand(tokens.shape[0], 1, -1)
        return torch.cat([cls, reg, tokens], dim=1)  # (B, 2 + T, d)


def test_a_size_read_from_a_tensor_is_the_batch_expand_reads_from_like() -> None:
    """``tokens.size(0)`` with ``dims={"B": 0}``: ``expand`` to ``[B, -1, -1]`` read from
    ``like: proj`` at run time, so another batch size runs; without ``dims``, the literal."""
    net = ClassToken()
    text = round_trip(net, (torch.randn(2, 5, 6),), dims={"B": 0})
    assert "op: expand, in: {x: cls_token, like: proj}, shape: [B, -1, -1]}" in text
    assert "op: expand, in: {x: reg_token, like: proj}, shape: [B, 1, -1]}" in text
    model = archcomp.build(text)
    model.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(4, 5, 6)  # B = 4, not 2
    with torch.no_grad(), RoundingChains() as chains:
        got, want = model(x), net(x)
    assert_close(got, want, chains.tolerance(torch.float32, got, want))
    literal = archcomp.import_module(net, (torch.randn(2, 5, 6),))
    assert "- {id: expand, op: expand, shape: [2, -1, -1]}" in literal


def test_a_size_read_from_a_tensor_for_anything_but_expand_is_refused() -> None:
    class View(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.view(x.size(0), -1)

    with pytest.raises(archcomp.importer.ImportFailure) as e:
        archcomp.import_module(View(), (torch.randn(2, 3, 4),), dims={"B": 0})
    assert "Tensor.view (shape (x.size(0), -1): sizes read from a tensor" in str(e.value)
    assert "x.view(x.size(0), -1)" in str(e.value)  # its line


def test_resnet_model_round_trip(tmp_path: Path) -> None:
    """transformers' ResNetModel: layers whose inner runs differ (a first block that strides
    and projects its shortcut, then plain ones) merge as alternatives of one id, each by
    ``when`` on the copy's index; its state_dict loads strictly, outputs and every gradient
    equal."""
    transformers = pytest.importorskip("transformers")
    quiet()
    cfg = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], layer_type="basic", image_size=32
    )
    ref = transformers.ResNetModel(cfg)
    redraw(ref, 3)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, b in ref.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                r = torch.rand(b.shape, generator=gen)
                b.copy_(r + 0.5 if name.endswith("var") else r - 0.5)
    ref.save_pretrained(tmp_path)
    text = import_hf(tmp_path)
    assert 'convolution_stride: "${convolution_stride[index]}"' in text  # strides per copy
    model = archcomp.build(text)
    model.load_state_dict(ref.state_dict(), strict=True)
    model.eval(), ref.eval()
    pixels = torch.randn(2, 3, 32, 32, generator=gen)
    case = Case(
        model,
        ref,
        (pixels,),
        lambda x: list(ref(pixel_values=x).to_tuple()),
        {n: (lambda n=n: ref.get_parameter(n).grad) for n, _ in model.named_parameters()},
    )
    check_case(case)
