"""The summary's figures against torch, its folding, its units and its JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import archcomp
from archcomp.backends.torch.summary import totals
from archcomp.base.units import fmt_bytes, fmt_count
from archcomp.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SMALL_TRANSFORMER = {"N": 2, "d_model": 64, "d_ff": 128, "h": 4, "vocab": 100}
MODELS = [("mlp", {}), ("lenet5", {}), ("transformer", SMALL_TRANSFORMER)]


def _inputs(g: archcomp.Graph) -> list[torch.Tensor]:
    """Real inputs at the spec's dims: token ids below the vocabulary, floats from randn."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for info in g.inputs.values():
        shape = [d if isinstance(d, int) else g.dims.get(str(d), 1) for d in info.type.shape]
        if info.type.dtype == "int64":
            out.append(torch.randint(0, 100, shape, generator=gen))
        else:
            out.append(torch.randn(shape, generator=gen))
    return out


def saved_bytes(model: torch.nn.Module, inputs: list[torch.Tensor]) -> int:
    """What autograd keeps for backward in one training forward, measured on real tensors:
    each storage once, parameters and buffers left out (they are not activations)."""
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in weights:
            kept[st.data_ptr()] = st.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(*inputs)
    assert isinstance(out, torch.Tensor)
    return sum(kept.values())


@pytest.mark.parametrize(("spec", "params"), MODELS)
def test_activation_estimate_within_10_percent_of_saved_tensors(spec: str, params: dict) -> None:
    g = archcomp.check(SPECS / f"{spec}.yaml", params)
    model = archcomp.build(g.spec, seed=0)
    measured = saved_bytes(model, _inputs(g))
    estimate = archcomp.summary(g).activation_bytes
    assert estimate is not None and measured > 0
    assert abs(estimate - measured) <= 0.10 * measured, (spec, estimate, measured)


@pytest.mark.parametrize(("spec", "params"), MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "none"])
def test_memory_figures_equal_torchs(spec: str, params: dict, dtype, optimizer: str) -> None:
    g = archcomp.check(SPECS / f"{spec}.yaml", params)
    s = archcomp.summary(g, dtype=dtype, optimizer=optimizer)
    model = archcomp.build(g.spec, seed=0, dtype=dtype)
    assert s.param_bytes == sum(p.numel() * p.element_size() for p in model.parameters())
    assert s.buffer_bytes == sum(b.numel() * b.element_size() for b in model.buffers())
    assert s.parameters == sum(p.numel() for p in model.parameters())
    assert sum(r.param_bytes for r in s.rows) == s.param_bytes  # each tensor in one row
    assert sum(r.buffer_bytes for r in s.rows) == s.buffer_bytes
    xs = [x.to(dtype) if x.is_floating_point() else x for x in _inputs(g)]
    model(*xs).float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert s.grad_bytes == sum(t.numel() * t.element_size() for t in grads)
    opt: torch.optim.Optimizer | None = None
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters())
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = 0
    if opt is not None:
        opt.step()
        state = sum(
            t.numel() * t.element_size()
            for st in opt.state.values()
            for t in st.values()
            if isinstance(t, torch.Tensor)
        )
    assert s.optimizer_bytes == state
    assert s.training_bytes == (
        s.param_bytes + s.buffer_bytes + s.grad_bytes + s.optimizer_bytes + s.activation_bytes
    )


def test_gpt3_default_depth_folds_the_96_blocks_into_one_row() -> None:
    s = archcomp.summary(SPECS / "gpt3.yaml")
    rows = s.rows_at(1)
    assert [r.name for r in rows] == ["wte", "wpe", "drop", "h_", "ln_f", "lm_head"]
    block = rows[3]
    assert (block.kind, block.op, block.count, block.folded) == (
        "repeat",
        "96x gpt_block",
        96,
        True,
    )
    inside = [r for r in s.rows if r.name.startswith("h_.")]
    assert block.parameters == sum(r.parameters for r in inside) == 96 * 1_812_099_072
    assert block.activation_bytes == sum(r.activation_bytes or 0 for r in inside)
    text = s.table()
    assert len(text.splitlines()) <= 25 and max(map(len, text.splitlines())) <= 110
    assert re.search(r"^h_ +96x gpt_block +\(B, T, 12288\) +174\.0G +648\.1 GiB", text, re.M)
    assert re.search(
        r"^activations +\d+\.\d GiB", text.replace("  activations", "activations"), re.M
    )
    assert "367.4T" in text and "367,406,987,870,208" not in text  # human units in the table


def test_open_blocks_are_rows_with_subtotals() -> None:
    s = archcomp.summary(SPECS / "transformer.yaml", SMALL_TRANSFORMER)
    rows = s.rows_at(None)
    names = [r.name for r in rows]
    assert len([r for r in rows if r.kind == "node"]) == len(s.rows)  # every node listed
    for i, r in enumerate(rows):
        if r.kind == "node":
            continue
        assert not r.folded
        inside = [x for x in s.rows if x.name.startswith(r.name + ".")]
        assert r.parameters == sum(x.parameters for x in inside), r.name
        assert r.macs == sum(x.macs for x in inside), r.name
        assert rows[i + 1].depth == r.depth + 1  # its contents follow, indented
    assert names.index("encoder") < names.index("encoder.layers") < names.index("encoder.layers.0")
    # A repeat and its copies are two levels: the repeat stays one row until the depth
    # reaches inside its copies, then each copy is a block row followed by its contents.
    two = [r.name for r in s.rows_at(2) if r.name.startswith("encoder.layers")]
    assert two == ["encoder.layers"]
    three = s.rows_at(3)
    copies = [r for r in three if re.fullmatch(r"encoder\.layers\.\d", r.name)]
    assert [(r.name, r.kind, r.folded, r.depth) for r in copies] == [
        ("encoder.layers.0", "block", False, 2),
        ("encoder.layers.1", "block", False, 2),
    ]


def test_tied_weights_are_marked_where_they_appear() -> None:
    s = archcomp.summary(SPECS / "gpt2.yaml")
    head = next(r for r in s.rows_at(1) if r.name == "lm_head")
    assert head.parameters == 0 and head.tied == ("weight = wte.weight",)
    assert s.ties == {"lm_head.weight": "wte.weight"}
    assert s.tied_parameters == 50257 * 768
    text = s.table()
    assert re.search(r"^lm_head +linear \(tied: wte\.weight\) +\(B, T, 50257\) +tied", text, re.M)
    assert re.search(r"^  tied +38\.6M +counted once: lm_head\.weight = wte\.weight$", text, re.M)
    assert re.search(r"^  non-trainable +0$", text, re.M)


def test_checkpointing_keeps_block_inputs_and_one_block() -> None:
    plain = archcomp.summary(SPECS / "gpt2.yaml")
    ckpt = archcomp.summary(SPECS / "gpt2.yaml", activation_checkpointing=True)
    assert plain.activation_bytes is not None and ckpt.activation_bytes is not None
    block = [r for r in plain.rows if r.name.startswith("h_.0.")]
    one_block = sum(r.activation_bytes or 0 for r in block)
    outside = sum(r.activation_bytes or 0 for r in plain.rows if not r.name.startswith("h_."))
    inputs = 12 * 1 * 1024 * 768 * 4  # each block keeps its (B, T, d_model) input
    assert ckpt.activation_bytes == outside + inputs + one_block
    assert ckpt.activation_bytes < plain.activation_bytes / 5


def test_json_follows_depth_and_keeps_exact_numbers(capsys) -> None:
    spec = str(SPECS / "gpt3.yaml")
    assert main(["summary", spec, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["depth"] == 1 and len(data["nodes"]) == 6
    h = data["nodes"][3]
    assert h["kind"] == "repeat" and h["count"] == 96 and h["parameters"] == 173_961_510_912
    assert data["macs"] == 367_406_987_870_208
    assert data["params"]["N"] == 96 and data["params"]["d_model"] == 12288
    assert data["memory"]["optimizer"] == "adamw"
    assert data["memory"]["param_bytes"] == 4 * 174_604_259_328
    assert main(["summary", spec, "--json", "--depth", "0", "-p", "N=2"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["params"]["N"] == 2 and small["nodes"][3]["count"] == 2
    assert main(["summary", spec, "--json", "--depth", "all", "-p", "N=2"]) == 0
    every = json.loads(capsys.readouterr().out)
    assert every["depth"] == "all"
    assert {n["name"] for n in every["nodes"] if n["kind"] == "node"} >= {"h_.1.attn", "lm_head"}


def test_params_attribute_is_deprecated() -> None:
    s = archcomp.summary(SPECS / "mlp.yaml")
    with pytest.warns(DeprecationWarning, match="Summary.parameters"):
        assert s.params == 67
    assert s.parameters == 67 and s.hyperparams == {}


def test_summary_flags(capsys) -> None:
    spec = str(SPECS / "gpt2.yaml")
    assert main(["summary", spec, "--json", "--dtype", "bf16", "--optimizer", "sgd"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dtype"] == "bfloat16" and data["memory"]["param_bytes"] == 2 * 124_439_808
    assert data["memory"]["optimizer_bytes"] == 2 * 124_439_808
    assert main(["summary", spec, "--optimizer", "lion"]) == 2
    assert "invalid choice: 'lion'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (67, "67"),
        (999, "999"),
        (61_706, "61.7k"),
        (999_950, "1.0M"),
        (124_439_808, "124.4M"),
        (174_604_259_328, "174.6G"),
        (367_406_987_870_208, "367.4T"),
        (12_345_678_000_000_000, "12,346T"),
    ],
)
def test_fmt_count(n: int, text: str) -> None:
    assert fmt_count(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (497_759_232, "474.7 MiB"),
        (2**41, "2.0 TiB"),
    ],
)
def test_fmt_bytes(n: int, text: str) -> None:
    assert fmt_bytes(n) == text


def test_summary_html_is_a_folded_table() -> None:
    s = archcomp.summary(SPECS / "gpt3.yaml")
    page = s._repr_html_()
    assert page.startswith('<table class="archcomp-summary">') and page.endswith("</table>")
    assert page.count("<tr") == 1 + 6 + len(totals(s))  # head, rows, totals
    assert "96x gpt_block" in page and "h_.1" not in page
    assert len(repr(s)) < 3000  # a notebook's or REPL's repr is the table, not a dump


def test_readme_shows_the_current_gpt3_summary(capsys) -> None:
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"`archcomp summary gpt3`.*?\n```\n(.*?)```", readme, re.S)
    assert shown is not None
    assert main(["summary", str(SPECS / "gpt3.yaml")]) == 0
    assert capsys.readouterr().out == shown.group(1)


def test_activations_unknown_when_the_forward_cannot_run_on_meta(monkeypatch) -> None:
    import archcomp.backends.torch.summary_compute as summary

    def no_meta_kernel(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("aten::something has no meta kernel")

    monkeypatch.setattr(summary, "trace_activations", no_meta_kernel)
    s = archcomp.summary(SPECS / "mlp.yaml")
    assert s.activation_bytes is None and s.training_bytes is None
    assert s.param_bytes == 268  # the rest of the summary stands
    assert re.search(r"^fc1 +linear +\(B, 5\) +55 +220 B +\? +50$", s.table(), re.M)
    assert s.to_json()["memory"]["activation_bytes"] is None


def test_world_size_per_rank_figures(capsys) -> None:
    spec = str(SPECS / "gpt2.yaml")
    assert main(["summary", spec, "--json", "--world-size", "4"]) == 0
    mem = json.loads(capsys.readouterr().out)["memory"]
    r = mem["per_rank"]
    # Independent reference: FSDP2 gives each rank ceil(dim0 / N) rows of every tensor.
    model = archcomp.build(spec, device="meta")
    want = sum(
        -(-p.shape[0] // 4) * (p.numel() // p.shape[0]) * p.element_size()
        for p in model.parameters()
    )
    assert r["world_size"] == 4 and r["param_bytes"] == want == r["grad_bytes"]
    assert r["optimizer_bytes"] == 2 * want + 4 * len(list(model.parameters()))
    assert r["activation_bytes"] == mem["activation_bytes"]  # per rank: its own batch
    # the root (wte/lm_head tied, wpe, ln_f) is the largest unit, unsharded while it runs
    root = model.wte.weight.numel() + model.wpe.weight.numel() + 2 * 768
    assert r["largest_unit"] == "" and r["unit_param_bytes"] == 4 * root
    assert r["training_bytes"] == (
        r["param_bytes"]
        + r["grad_bytes"]
        + r["optimizer_bytes"]
        + r["activation_bytes"]
        + 2 * r["unit_param_bytes"]
    )
    assert main(["summary", spec]) == 0
    assert "per rank" not in capsys.readouterr().out
    assert main(["summary", spec, "--world-size", "2", "--activation-checkpointing"]) == 0
    assert "per rank (FSDP, world size 2)" in capsys.readouterr().out
    assert main(["summary", spec, "--world-size", "0"]) == 2
    assert "--world-size: must be an integer from 1 to 1,048,576" in capsys.readouterr().err
    assert main(["summary", spec, "--world-size", "1" + "0" * 30]) == 2
    assert "--world-size: must be an integer from 1 to 1,048,576" in capsys.readouterr().err


def test_world_size_one_is_the_unsharded_step() -> None:
    s = archcomp.summary("gpt2", world_size=1)
    r = s.per_rank
    assert r is not None and r.unit_param_bytes == 0
    assert (r.param_bytes, r.grad_bytes, r.optimizer_bytes) == (
        s.param_bytes,
        s.grad_bytes,
        s.optimizer_bytes,
    )
    assert r.training_bytes == s.training_bytes
    with pytest.raises(archcomp.UsageError, match="world size"):
        archcomp.summary("gpt2", world_size=0)
