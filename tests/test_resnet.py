"""specs/resnet18.yaml and specs/resnet50.yaml against a ResNet written by hand in torchvision's
layout (torchvision itself cannot be installed next to CPU torch): the same parameter names
(but downsample.0/1 -> downsample.conv/bn) and shapes at full size, and, at small sizes with
the weights copied, the same logits, gradients and batch-norm running statistics, in eval
and in train mode. Tolerances: assert_close's float32 defaults (tests/numerics.py replaces
them once the numerics branch lands).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import archcomp

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


# -- the reference: torchvision's ResNet, written out ----------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5: the stride is on the 3x3 conv, as in torchvision."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(
        self, block: type[BasicBlock | Bottleneck], layers: list[int], classes: int, width: int
    ):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0], 1)
        self.layer2 = self._make_layer(block, 2 * width, layers[1], 2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], 2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, classes)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def spec_name(key: str) -> str:
    """torchvision's state-dict key -> the spec's."""
    return key.replace("downsample.0.", "downsample.conv.").replace(
        "downsample.1.", "downsample.bn."
    )


CASES = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], 11_689_512),
    "resnet50": (Bottleneck, [3, 4, 6, 3], 25_557_032),
}
SMALL = {"width": 8, "classes": 10, "image": 32}


@pytest.mark.parametrize("name", sorted(CASES))
def test_full_size_names_shapes_and_count_are_torchvisions(name: str) -> None:
    block, layers, count = CASES[name]
    with torch.device("meta"):
        ref = ResNet(block, layers, 1000, 64)
    model = archcomp.build(SPECS / f"{name}.yaml", device="meta")
    want = {spec_name(k): tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == want
    assert sum(p.numel() for p in model.parameters()) == count
    assert sum(p.numel() for p in ref.parameters()) == count


def _pair(name: str, seed: int) -> tuple[nn.Module, ResNet]:
    """The compiled spec and the reference at small sizes, with the spec's weights copied and
    running statistics made non-trivial (so eval mode really uses them)."""
    block, layers, _ = CASES[name]
    model = archcomp.build(SPECS / f"{name}.yaml", SMALL, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "bn.weight")):
                t.uniform_(0.5, 1.5, generator=gen)
            elif key.endswith(("running_mean", ".bias")) and key != "fc.bias":  # BN biases
                t.uniform_(-0.2, 0.2, generator=gen)
            elif key.endswith("running_var"):
                t.uniform_(0.5, 2.0, generator=gen)
    ref = ResNet(block, layers, SMALL["classes"], SMALL["width"])
    state = model.state_dict()
    ref.load_state_dict({k: state[spec_name(k)] for k in ref.state_dict()})
    return model, ref


def _compare(model: nn.Module, ref: ResNet, x: torch.Tensor) -> None:
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    ya, yb = model(xa), ref(xb)
    assert ya.shape == (x.shape[0], SMALL["classes"])
    assert_close(ya, yb)
    proj = torch.randn_like(ya)
    (ya * proj).sum().backward()
    (yb * proj).sum().backward()
    assert xa.grad is not None and xb.grad is not None
    assert_close(xa.grad, xb.grad)
    params = dict(model.named_parameters())
    for key, p in ref.named_parameters():
        got = params[spec_name(key)].grad
        assert got is not None and p.grad is not None, key
        assert_close(got, p.grad, msg=key)


@pytest.mark.parametrize("name", sorted(CASES))
def test_eval_matches_the_reference(name: str) -> None:
    model, ref = _pair(name, seed=0)
    model.eval()
    ref.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    _compare(model, ref, x)


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_mode_matches_the_reference_and_updates_the_same_statistics(name: str) -> None:
    model, ref = _pair(name, seed=2)
    model.train()
    ref.train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    _compare(model, ref, x)
    state = model.state_dict()
    for key, t in ref.state_dict().items():
        if "running" in key or "num_batches" in key:
            assert_close(state[spec_name(key)], t, msg=key)


def test_stage_depths_are_params() -> None:
    """ResNet-34 and -101 are a -p away; a stage of 0 blocks is left out."""
    r34 = archcomp.summary(SPECS / "resnet18.yaml", {"n1": 3, "n2": 4, "n3": 6, "n4": 3})
    assert r34.parameters == 21_797_672  # torchvision's resnet34
    r101 = archcomp.summary(SPECS / "resnet50.yaml", {"n3": 23})
    assert r101.parameters == 44_549_160  # torchvision's resnet101
    model = archcomp.build(SPECS / "resnet18.yaml", {**SMALL, "n4": 0}, seed=0)
    assert not any(k.startswith("layer4") for k in model.state_dict())
    assert model.fc.in_features == 4 * SMALL["width"]  # stage 3's width goes straight to fc
