"""Import round trips: a torch.nn module -> archcomp.import_module -> check -> build -> the
module's own state_dict loaded strictly -> outputs and gradients equal (tests/NUMERICS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from import_checks import round_trip
from import_models import (
    Assorted,
    Cnn,
    Defaults,
    LstmClassifier,
    Mlp,
    SequentialStack,
    Spectral,
    TinyLM,
    Token,
)
from torch import nn

import archcomp
from archcomp.cli.main import main
from archcomp.importer import ImportFailure


def test_mlp_round_trip_reads_like_a_spec() -> None:
    text = round_trip(Mlp(), (torch.randn(4, 6),), dims={"B": 0})
    assert "x: {shape: [B, 6]}" in text
    assert "- {id: fc1, op: linear, out_features: 12}" in text
    assert "- {id: fc2, op: linear, out_features: 3, bias: false}" in text


def test_cnn_round_trip() -> None:
    text = round_trip(Cnn(), (torch.randn(2, 3, 8, 8),), dims={"B": 0})
    assert "op: conv2d, out_channels: 8, kernel_size: 3, padding: 1" in text
    assert "max_pool2d" in text and "flatten" in text


def test_lstm_classifier_round_trip() -> None:
    text = round_trip(LstmClassifier(), (torch.randn(3, 5, 10),), dims={"B": 0, "S": 1})
    assert "{id: lstm, op: lstm, hidden_size: 8, num_layers: 2}" in text
    assert "in: lstm.output, at: '[:, -1, :]'" in text


def test_assorted_ops_round_trip() -> None:
    text = round_trip(Assorted().train(), (torch.randn(3, 7, 6),), dims={"B": 0})
    assert "scalar: 1.0, scalar_first: true" in text and "op: gru" in text


def test_arguments_left_at_their_defaults_are_constants() -> None:
    text = round_trip(Defaults(), (torch.randn(2, 4),))
    assert "inputs:\n  x: {shape: [2, 4]}\nblocks:\n  gate:\n    inputs: [x]\n" in text


def test_transformer_stack_becomes_blocks_and_one_repeat() -> None:
    ids = torch.randint(0, 20, (2, 5))
    text = round_trip(TinyLM(), (ids,), dims={"B": 0, "T": 1})
    assert "input_ids: {shape: [B, T], dtype: int64}" in text
    assert "{id: layers, op: layer, repeat: 3}" in text
    for block in ("layer:", "attention:", "feed_forward:"):
        assert f"\n  {block}\n" in text
    assert text.count("op: scaled_dot_product_attention") == 1  # one block, not three copies


def test_unsupported_calls_are_listed_with_their_source_lines() -> None:
    with pytest.raises(ImportFailure) as e:
        archcomp.import_module(Spectral(), (torch.randn(2, 4),))
    message = str(e.value)
    assert "2 unsupported call(s)" in message
    assert "torch.fft.fft" in message and "y = torch.fft.fft(x).abs()" in message
    assert "torch.cumprod" in message and "import_models.py:" in message


def test_a_sequential_of_equal_children_is_one_repeat() -> None:
    text = round_trip(SequentialStack(), (torch.randn(2, 5, 8),), dims={"B": 0, "T": 1})
    assert "- {id: layers, op: layer, repeat: 2}" in text
    assert "- {id: head, op: linear, repeat: 2, out_features: 8}" in text


def test_a_sequential_of_different_children_is_nodes_in_order() -> None:
    """Node ids ``0``, ``1``, ... as the Sequential's children: its state_dict loads as is."""
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    text = round_trip(seq, (torch.randn(2, 4),))
    assert "  - {id: '0', op: linear, out_features: 8}\n  - {id: '1', op: relu}\n" in text
    assert "outputs: {out: '2'}" in text

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
            self.head = nn.Linear(4 * 6 * 6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))  # (B, 2)

    text = round_trip(Net(), (torch.randn(2, 3, 8, 8),), dims={"B": 0})
    assert "      - {id: '1', op: batch_norm}" in text and "- {id: body, op: sequential}" in text
    with pytest.raises(ImportFailure) as e:  # what a node of it calls is still listed
        archcomp.import_module(nn.Sequential(nn.Linear(4, 4), Spectral()), (torch.randn(2, 4),))
    assert "torch.fft.fft" in str(e.value) and "y = torch.fft.fft(x).abs()" in str(e.value)


@pytest.mark.parametrize(
    "name", ["\u0663", "\u00b2", "\uff11", "1" * 65, "a" * 65]
)  # Arabic-Indic 3, superscript 2, fullwidth 1; a node id is at most 64 characters
def test_a_child_named_by_a_digit_that_is_not_ascii_is_refused_by_its_path(name: str) -> None:
    """``str.isdigit`` holds for the first three, but a node id is ASCII digits (and at most
    64 characters): the child is refused where it is called, never written into a spec that
    does not build."""
    seq = nn.Sequential()
    seq.add_module("0", nn.Linear(4, 4))
    seq.add_module(name, nn.ReLU())
    with pytest.raises(ImportFailure) as e:
        archcomp.import_module(seq, (torch.randn(2, 4),))
    assert f"self.{name} (its path is no node id" in str(e.value)


class Biased(nn.Module):
    """A linear layer plus a buffer of its own (BART's ``lm_logits + self.final_logits_bias``)."""

    def __init__(self, bias: torch.Tensor, persistent: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.register_buffer("final_logits_bias", bias, persistent=persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.final_logits_bias


def test_a_bare_parameter_or_buffer_is_a_node_keyed_by_its_name() -> None:
    """``x + self.token``: a ``parameter`` keyed by its own name (tests/test_import_params.py);
    a buffer read so is a ``buffer`` keyed by its name (loaded from the state dict, or, outside
    it, filled with its one value); an integer buffer is refused by name."""
    text = round_trip(Token(), (torch.randn(2, 3, 6),))
    assert "- {id: token, op: parameter, shape: [1, 1, 6], key: self}" in text
    text = round_trip(Biased(torch.randn(1, 6)), (torch.randn(2, 3, 6),))
    assert "- {id: final_logits_bias, op: buffer, shape: [1, 6], key: self}" in text
    again = archcomp.import_module(archcomp.build(text), (torch.randn(2, 3, 6),))
    assert again.splitlines()[1:] == text.splitlines()[1:]  # a fixed point (up to the header)
    text = round_trip(Biased(torch.full((6,), 0.5), False), (torch.randn(2, 3, 6),))
    assert (
        "- {id: final_logits_bias, op: buffer, shape: [6], key: self, init_value: 0.5, "
        "persistent: false}" in text
    )
    for bias, why in (
        (torch.ones(6, dtype=torch.int64), "a buffer of int64"),
        (torch.arange(6.0), "a buffer outside the state dict whose values are not one"),
    ):
        with pytest.raises(ImportFailure, match=rf"self\.final_logits_bias \({why}"):
            archcomp.import_module(Biased(bias, False), (torch.randn(2, 3, 6),))


class ClipHead(nn.Module):
    """CLIP's head as one writes it by hand: the features at each text's largest id (argmax,
    expand, gather), L2-normalised with ``** 2``, ``sum`` and ``** 0.5``, and ``a @ b.t()``."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 4, bias=False)

    def forward(self, x: torch.Tensor, ids: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        at = torch.argmax(ids, -1, keepdim=True)[:, :, None].expand(-1, -1, 6)  # (N, 1, 6)
        pooled = self.proj(torch.gather(x, 1, at)[:, 0])  # (N, 4)
        norm = torch.sum(pooled**2, -1, keepdim=True) ** 0.5
        return (pooled / norm) @ img.t()  # (N, B)


def test_clip_head_calls_round_trip() -> None:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 50, (3, 5), generator=gen)
    example = (torch.randn(3, 5, 6, generator=gen), ids, torch.randn(2, 4, generator=gen))
    text = round_trip(ClipHead(), example)
    for node in (
        "{id: argmax, op: argmax, in: ids, dim: -1, keepdim: true}",
        "op: expand, shape: [-1, -1, 6]}",
        "op: gather, in: [x, expand], dim: 1}",
        "{id: pow_1, op: pow, exponent: 2}",
        "op: transpose, in: img, dim0: 0, dim1: 1}",
        "op: matmul, in: [truediv, t]}",
    ):
        assert node in text, node


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # on the values: neither torch.fx nor torch.export can trace it
            return x.relu()
        return x.tanh()


def test_untraceable_control_flow_is_refused_with_its_line() -> None:
    with pytest.raises(ImportFailure) as e:
        archcomp.import_module(DataDependent(), (torch.randn(2, 5),))
    assert "torch.fx cannot trace it" in str(e.value) and "test_import.py:" in str(e.value)
    assert "torch.export cannot trace DataDependent" in str(e.value)


def test_bad_example_inputs_are_a_usage_error() -> None:
    with pytest.raises(archcomp.UsageError, match=r"do not fit Mlp\.forward"):
        archcomp.import_module(Mlp(), {"y": torch.randn(2, 6)})
    with pytest.raises(archcomp.UsageError, match="name no dim"):
        archcomp.import_module(Mlp(), (torch.randn(2, 6),), dims={"T": ("ids", 1)})


def test_cli_imports_a_factory_and_the_spec_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lm.yaml"
    argv = ["import", "import_models:TinyLM", "--input", "input_ids=2,5:int64"]
    assert main([*argv, "--dims", "B=0,T=input_ids.1", "-o", str(out)]) == 0
    assert "input_ids: {shape: [B, T], dtype: int64}" in out.read_text()
    assert archcomp.check(str(out)).name == "tiny_lm"
    assert main([*argv, "-o", str(out)]) == 2  # exists, no --force
    assert "pass --force" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import_models:Nope", "--input", "x=2,6"], "AttributeError"),
        (["no_such_package.models:make", "--input", "x=2,6"], "No module named"),
        (["import_models", "--input", "x=2,6"], "expected PACKAGE.MODULE:FACTORY"),
        (["import_models:Mlp", "--input", "x=2,six"], "expected NAME=SHAPE[:DTYPE]"),
        (["import_models:Mlp", "--input", "x=2,6:complex"], "unknown dtype"),
        (["import_models:Mlp", "--input", "x=2,6", "--dims", "B=first"], "expected NAME=DIM"),
        (["import_models:Mlp"], "give the example inputs"),
        (["import_models:Spectral", "--input", "x=2,4"], "torch.fft.fft"),
    ],
)
def test_cli_bad_factory_shape_or_module_exits_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_help_says_it_runs_the_named_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "--help"]) == 0
    assert "runs the Python code you name" in " ".join(capsys.readouterr().out.split())


def test_docs_worked_example_prints_what_the_doc_shows(capsys: pytest.CaptureFixture[str]) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "import.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    shown = doc.split("prints\n\n```yaml\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/import.md", "exec"), {"__name__": "docs_import"})  # the doc's code
    assert capsys.readouterr().out == shown + "\n"


def test_a_child_named_like_a_function_call_keeps_its_name() -> None:
    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.add = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.add(x + y)

    text = round_trip(Named(), (torch.randn(2, 4), torch.randn(2, 4)))
    assert "- {id: add, op: linear" in text and "- {id: add_1, op: add" in text


class _SlicedPositions(nn.Module):
    """A position table sliced by the input's length (``pos[: ids.shape[1]]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(11, 8)
        self.pos = nn.Parameter(torch.randn(32, 8))
        self.fc = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.tok(ids) + self.pos[: ids.shape[1]])


@pytest.mark.parametrize("dims", [None, {"B": 0, "T": 1}])
def test_a_spec_that_would_not_check_is_refused_not_written(
    dims: dict[str, int] | None,
) -> None:
    """What the importer writes is checked before it is returned: a slice bound read from a
    tensor's size, which no spec value says, is a refusal naming the written line, never a
    spec that imports with exit 0 and fails at `archcomp check`."""
    ids = torch.randint(0, 11, (2, 8))
    with pytest.raises(ImportFailure) as e:
        archcomp.import_module(_SlicedPositions(), (ids,), dims=dims)
    first = e.value.problems[0]
    assert first.startswith("the spec it would write does not check: ")


def test_an_example_of_the_wrong_rank_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Conv2d model traced on a rank-3 example: the written spec does not check, so
    `archcomp import` exits 2 with the check's message and writes nothing."""
    out = tmp_path / "cnn.yaml"
    args = ["import", "import_models:Cnn", "--input", "x=2,1,28", "-o", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "does not check" in err and "rank-4" in err and "Traceback" not in err
    assert not out.exists()


class _TiedLM(nn.Module):
    """A tied LM head: ``head.weight = tok.weight``."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(11, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 11, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.tok(ids)))


class _TiedInside(nn.Module):
    """A tensor shared from inside a block to a module outside it."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(11, 8)
        self.out = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 11, bias=False))
        self.out[1].weight = self.tok.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.tok(ids))


def test_a_shared_tensor_is_a_tie_not_two_copies() -> None:
    """torch.fx's import of a tied LM head writes the tie: one tensor, counted once, and a
    step that trains it moves both uses."""
    ref = _TiedLM()
    ids = torch.randint(0, 11, (2, 5))
    text = archcomp.import_module(ref, (ids,), dims={"B": 0, "T": 1})
    assert "tie: {weight: tok.weight}" in text
    model = archcomp.build(text)
    model.load_state_dict(ref.state_dict(), strict=True)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    assert model.get_parameter("head.weight") is model.get_parameter("tok.weight")
    torch.testing.assert_close(model(ids), ref(ids))


def test_a_shared_tensor_no_tie_can_say_is_refused() -> None:
    """A tensor shared across a block's edge, which the fx import cannot tie yet, is refused
    by its path rather than imported as two tensors."""
    with pytest.raises(ImportFailure) as e:
        archcomp.import_module(_TiedInside(), (torch.randint(0, 11, (2, 5)),))
    assert e.value.problems[0].startswith("self.out.1 (tied to {'weight': 'tok.weight'}, outside")
