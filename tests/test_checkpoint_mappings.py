"""The mapping language: patterns, transforms and their inverses, the shipped mappings, and
every mistake in a mapping file as a case in tests/mappings/invalid/ with its exact message.

A case file is a mapping, then a marker line, then the expected stderr of ``archcomp convert``
of a small GPT-2 checkpoint with that mapping, as comments (regenerate with
``ARCHCOMP_UPDATE_GOLDEN=1``). Nothing is written by a failing convert.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import archcomp
from archcomp.base.errors import UsageError
from archcomp.checkpoints import library, patterns, transforms
from archcomp.checkpoints.mapping import load_mapping
from archcomp.cli import main

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "tests" / "mappings"
CASES = sorted((MAPPINGS / "invalid").glob("*.yaml"))
MARKER = "# ---- expected ----"
UPDATE = os.environ.get("ARCHCOMP_UPDATE_GOLDEN") == "1"
SMALL = {"N": 2, "d_model": 32, "h": 4, "vocab": 61, "context": 16}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GPT-2 checkpoint folder (exported from the spec: no transformers needed)."""
    folder = tmp_path_factory.mktemp("ckpt") / "ckpt"
    archcomp.save_pretrained(archcomp.build("gpt2", SMALL, seed=0), folder)
    return folder


def _expected(text: str) -> str:
    _, _, tail = text.partition(MARKER + "\n")
    return "".join(
        line[2:] if line.startswith("# ") else line[1:] for line in tail.splitlines(keepends=True)
    )


def _convert(
    mapping_text: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    shutil.copytree(checkpoint, tmp_path / "ckpt")
    (tmp_path / "mapping.yaml").write_text(mapping_text)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main(["convert", "ckpt", "--mapping", "mapping.yaml", "-o", "out.safetensors"])
    finally:
        os.chdir(cwd)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_invalid_mapping(
    case: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = case.read_text()
    code, err = _convert(text.partition(MARKER)[0], checkpoint, tmp_path, capsys)
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "out.safetensors").exists()
    if UPDATE:
        head = text.partition(MARKER)[0].rstrip("\n") + "\n"
        body = "".join("# " + ln if ln.strip() else "#\n" for ln in err.splitlines(keepends=True))
        case.write_text(head + MARKER + "\n" + body)
        return
    assert MARKER in text, f"{case.name} has no expected section; run with ARCHCOMP_UPDATE_GOLDEN=1"
    assert err == _expected(text)


def test_the_compact_mapping_converts_like_the_shipped_one(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _convert((MAPPINGS / "compact_gpt2.yaml").read_text(), checkpoint, tmp_path, capsys)
    assert code == 0, err
    ours = archcomp.load(tmp_path / "out.safetensors")
    shipped = archcomp.from_pretrained(checkpoint)
    for key, t in shipped.state_dict().items():
        assert torch.equal(ours.state_dict()[key], t), key


# ----------------------------------------------------------------------------- shipped


def test_every_shipped_mapping_loads_and_names_a_shipped_spec() -> None:
    found = library.shipped_mappings()
    assert {"gpt2", "bert_base"} <= set(found)
    for name, path in found.items():
        m = load_mapping(path)
        assert library.resolve_spec(m) == library.specs_dir() / f"{name}.yaml"
        assert library.specs_dir() == ROOT / "archcomp" / "specs"


@pytest.mark.parametrize("name", sorted(library.shipped_mappings()))
def test_shipped_defaults_are_transformers_defaults(name: str) -> None:
    """A config.json may omit a field; the mapping's default must be what transformers uses
    then (an expression evaluated over transformers' own defaults), or where transformers' is
    null (Phi-3's sliding_window: no window) the mapping's reading of null. A field
    transformers no longer has is one older checkpoints carry: the mapping requires its
    default, or it is the older name of a field another default reads it into, or a key
    transformers leaves out of one of its objects where it means the neutral value (no RoPE
    scaling: factor 1), or a field of a RoPE scaling (YaRN's factor) where transformers'
    default config has the plain RoPE, which reads none."""
    transformers = pytest.importorskip("transformers")
    from archcomp.checkpoints.config import allowed, flatten, with_defaults
    from archcomp.checkpoints.mapping import Cases
    from archcomp.frontend.expr import substitute

    m = load_mapping(library.shipped_mappings()[name])
    config = flatten(transformers.AutoConfig.for_model(m.model_type).to_dict())
    filled = with_defaults(m, config)
    for field, value in m.defaults.items():
        absent = value.if_absent if isinstance(value, Cases) else value
        if config.get(field, 0) is None:  # transformers' is null: absent must read as null
            assert not isinstance(value, Cases) or value.if_absent == value.if_null, field
        elif field in config:
            want = substitute(absent, {k: v for k, v in filled.items() if v is not None})
            assert config[field] == want, (field, config[field], want)
        elif field.startswith("rope_parameters.") and (
            filled.get(f"{field.rsplit('.', 1)[0]}.rope_type") == "default"
        ):  # the rope_type of the field's own object (Gemma 3's per layer type)
            continue  # a scaled RoPE's field; the spec's scaling is none at its default
        elif field in m.config:  # an older field: the spec requires transformers' value
            assert filled[field] == allowed(m.config[field], {})[0], field  # (written first)
        elif field in m.params.values() and field.rsplit(".", 1)[0] in config:
            pass  # an optional key of an object transformers has (Gemma 3's RoPE factor)
        else:  # an older name of a field: another default reads it
            readers = [v for v in m.defaults.values() if re.search(rf"\b{field}\b", str(v))]
            assert readers, f"{field}: neither a transformers field, required, nor read"


def test_no_shipped_mapping_for_the_model_type(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    config = (folder / "config.json").read_text().replace('"gpt2"', '"gpt_neo"')
    (folder / "config.json").write_text(config)
    assert main(["convert", str(folder), "-o", str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "no shipped mapping reads model_type 'gpt_neo'" in err
    types = sorted({load_mapping(p).model_type for p in library.shipped_mappings().values()})
    assert f"shipped: {', '.join(types)}. Write one (docs/checkpoints.md) and pass --mapping" in err


# ----------------------------------------------------------------------------- patterns


def test_pattern_alternatives_pair_and_placeholders_match() -> None:
    p = patterns.parse("h.{i}.ln_{1,2}.{weight,bias}")
    keys = [str(k) for k in p.expansions()]
    assert keys == ["h.{i}.ln_1.weight", "h.{i}.ln_1.bias", "h.{i}.ln_2.weight", "h.{i}.ln_2.bias"]
    k = p.expansions()[2]
    assert k.match("h.11.ln_2.weight") == {"i": 11}
    assert k.match("h.011.ln_2.weight") is None  # indices are written without leading zeros
    assert k.match("h.x.ln_2.weight") is None
    assert k.format({"i": 3}) == "h.3.ln_2.weight"


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("a.{i.b", "'{' without a matching '}'", 2),
        ("a.i}.b", "'}' without a matching '{'", 3),
        ("a.{I}", "'{I}' is neither a placeholder", 2),
        ("a.{x,}", "an empty alternative in '{x,}'", 2),
        ("a.{i}.{i}", "placeholder '{i}' appears twice", 6),
        ("a b", "character ' ' is not allowed in a key", 1),
        ("", "a key pattern is empty", 0),
    ],
)
def test_pattern_errors(text: str, message: str, offset: int) -> None:
    with pytest.raises(patterns.PatternError) as err:
        patterns.parse(text)
    assert err.value.message.startswith(message)
    assert err.value.offset == offset


PATTERN_TEXTS = [
    "a.{i}.b",
    "{i}",
    "{i}{j}",
    "h.{i}0.w",
    "x-y_z.0",
    "a.{i}.{i}",
    "a.{i}.{j}.{i}",
    "{I}",
    "a.{}",
    "a.{i,j}",
    "h.{i}.ln_{1,2}.w",
    "{",
    "}",
    "a b",
    "",
    "{_x}.{y9}",
    "l.{i}.{q,k,v}_proj",
]


@pytest.mark.parametrize("text", PATTERN_TEXTS)
def test_the_fast_read_of_a_pattern_agrees_with_the_character_loop(text: str) -> None:
    """parse() reads a pattern without alternatives by a regex; _parse() (the general
    reader) must give the same pattern, keys and error for every text."""

    def read(parser: Any) -> Any:
        try:
            p = parser(text)
        except patterns.PatternError as exc:
            return exc.message, exc.offset
        return p, [k.parts for k in p.expansions()], [str(k) for k in p.expansions()]

    assert read(patterns.parse) == read(patterns._parse)


def test_plain_rules_are_the_rules_the_general_path_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rules read by the short cut (_plain_copies) equal those of the general path."""
    import archcomp.checkpoints.mapping as mapping

    path = tmp_path / "m.yaml"
    path.write_text(
        "archcomp_mapping: 1\nspec: gpt2\ncheckpoint: {model_type: x, architecture: X}\n"
        "tensors:\n  a.{i}.w: b.{i}.w\n  c.{i}.{j}: d.{j}.{i}\n  e.0: f\n  g.{i}: drop\n"
        "  h.{i}.{q,k}: {to: 'm.{i}.{q,k}'}\n  n.{i}: {tie: 'a.{i}.w'}\n"
    )
    fast = load_mapping(path).rules
    monkeypatch.setattr(mapping, "_plain_copies", lambda tensors: [None] * len(tensors))
    assert fast == load_mapping(path).rules
    assert [r.kind for r in fast] == ["copy", "copy", "copy", "drop", "copy", "copy", "tie"]


# ----------------------------------------------------------------------------- transforms


def _resolved(value: Any, parts: int = 1) -> transforms.Transform:
    return transforms.parse(value).resolve({"d": 4, "h": 2}, parts)


@pytest.mark.parametrize(
    ("value", "parts", "shapes"),
    [
        ("transpose", 1, [(6, 4)]),
        ({"transpose": [0, 2]}, 1, [(2, 3, 5)]),
        ("split", 3, [(12, 4)]),
        ({"split": {"dim": 1, "sizes": ["${d}", 2, 2]}}, 3, [(3, 8)]),
        ("concat", 2, [(4, 5), (4, 5)]),
        ({"concat": {"dim": 0, "sizes": [2, "${d}"]}}, 2, [(2, 3), (4, 3)]),
        ({"reshape": {"from": [1, 1, "${d}"], "to": ["${d}"]}}, 1, [(1, 1, 4)]),
        ({"permute_qk": {"heads": "${h}", "from": "interleaved", "to": "half"}}, 1, [(8, 3)]),
        ({"permute_qk": {"heads": "${h}", "from": "half", "to": "interleaved"}}, 1, [(8,)]),
    ],
)
def test_each_transform_inverts_exactly_and_knows_its_shapes(
    value: Any, parts: int, shapes: list[tuple[int, ...]]
) -> None:
    t = _resolved(value, parts)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(s, generator=g) for s in shapes]
    ys = t.apply(xs)
    assert [tuple(y.shape) for y in ys] == t.shapes(shapes)
    back = t.inverse().apply(ys)
    assert len(back) == len(xs)
    for a, b in zip(back, xs, strict=True):
        assert torch.equal(a, b)


def test_permute_qk_is_the_meta_to_transformers_permutation() -> None:
    """transformers' convert_llama_weights_to_hf.py turns Meta's interleaved q/k rows into
    rotate-half order with ``w.view(h, d // h // 2, 2, dim).transpose(1, 2).reshape(d, dim)``."""
    heads, d, dim = 4, 16, 5
    w = torch.randn(d, dim)
    reference = w.view(heads, d // heads // 2, 2, dim).transpose(1, 2).reshape(d, dim)
    t = _resolved({"permute_qk": {"heads": heads, "from": "interleaved", "to": "half"}})
    assert torch.equal(t.apply([w])[0], reference)
    # RoPE pairs: interleaved rotates rows (0, 1), half rotates rows (0, d_head / 2)
    row = torch.arange(d, dtype=torch.float32)[:, None]
    half = t.apply([row])[0][:, 0].view(heads, -1)
    assert half[0].tolist() == [0, 2, 1, 3]  # head 0: x of each pair, then y


def test_transforms_are_views_where_torch_can_make_one() -> None:
    x = torch.randn(4, 6)
    (y,) = _resolved("transpose").apply([x])
    parts = _resolved("split", 3).apply([y])
    assert all(p.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for p in parts)


@pytest.mark.parametrize(
    ("value", "parts", "shapes", "message"),
    [
        ("split", 3, [(10, 4)], "split into 3 equal parts: dim 0 of [10, 4] is 10"),
        ({"split": {"sizes": [3, 3, 3]}}, 3, [(10, 4)], "split sizes [3, 3, 3] add up to 9"),
        ("concat", 2, [(4, 5), (4, 6)], "concat along dim 0: the parts' shapes"),
        ("transpose", 1, [(4,)], "transpose needs dim 1, but the tensor has shape [4]"),
        (
            {"reshape": {"from": [1, 4], "to": [4]}},
            1,
            [(4, 1)],
            "reshape from [1, 4] to [4], but the tensor has shape [4, 1]",
        ),
        (
            {"permute_qk": {"heads": 3, "from": "half", "to": "interleaved"}},
            1,
            [(8, 2)],
            "permute_qk over 3 heads needs dim 0 to be heads x an even head size",
        ),
    ],
)
def test_transform_shape_errors(
    value: Any, parts: int, shapes: list[tuple[int, ...]], message: str
) -> None:
    with pytest.raises(transforms.TransformError) as err:
        _resolved(value, parts).shapes(shapes)
    assert err.value.message.startswith(message)


# ----------------------------------------------------------------------------- config fields


def test_nested_fields_defaults_in_order_and_null_as_default() -> None:
    """transformers 5 nests rope_theta in rope_parameters; older configs write it at the top
    or not at all. A default applies to an absent or null field, and may name an earlier one."""
    from archcomp.checkpoints.config import nest, spec_params, with_defaults
    from archcomp.checkpoints.mapping import parse_mapping
    from archcomp.frontend.source import load_yaml

    text = """archcomp_mapping: 1
spec: gpt2
checkpoint: {model_type: x, architecture: X}
params: {d_model: rope_parameters.rope_theta, h: n_head, N: "${n_layer * 2}"}
defaults:
  rope_theta: 10000.0
  rope_parameters.rope_theta: "${rope_theta}"
  n_head: 4
tensors: {a: b}
"""
    m = parse_mapping(*load_yaml(text, "m.yaml"))
    new = {
        "rope_parameters": {"rope_theta": 5e5, "rope_type": "default"},
        "n_head": None,
        "n_layer": 3,
    }
    assert spec_params(m, with_defaults(m, new)) == {"d_model": 5e5, "h": 4, "N": 6}
    old = {"rope_theta": 2.5e5, "n_head": 8, "n_layer": 1}
    assert spec_params(m, with_defaults(m, old)) == {"d_model": 2.5e5, "h": 8, "N": 2}
    assert spec_params(m, with_defaults(m, {"n_layer": 1}))["d_model"] == 10000.0
    assert nest({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}


def test_a_param_from_a_tensor_size_and_an_export_only_field(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A size config.json does not write (a classifier's label count: transformers writes
    id2label) is read from a tensor; export writes the field transformers derives it from."""
    text = (MAPPINGS / "compact_gpt2.yaml").read_text()
    text = text.replace(
        "params: {vocab: vocab_size,", "params: {vocab: {tensor: transformer.wte.weight, dim: 0},"
    )
    text = text.replace("tensors:\n", 'export: {vocab_size: "${vocab}"}\ntensors:\n')
    config = json.loads((checkpoint / "config.json").read_text())
    folder = tmp_path / "no_vocab"
    shutil.copytree(checkpoint, folder)
    del config["vocab_size"]
    (folder / "config.json").write_text(json.dumps(config))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text)
    model = archcomp.from_pretrained(folder, mapping=mapping)
    assert model.spec["params"]["vocab"] == SMALL["vocab"]
    archcomp.save_pretrained(model, tmp_path / "out", mapping=mapping)
    assert (
        json.loads((tmp_path / "out" / "config.json").read_text())["vocab_size"] == SMALL["vocab"]
    )
    bad = text.replace("dim: 0}", "dim: 2}")
    mapping.write_text(bad)
    with pytest.raises(archcomp.SpecError) as err:
        archcomp.from_pretrained(folder, mapping=mapping)
    assert (
        "param 'vocab': checkpoint tensor 'transformer.wte.weight' has shape [61, 32], no dim 2"
        in str(err.value)
    )


def test_a_missing_tensor_is_reported_at_the_first_rule_that_reads_it(tmp_path: Path) -> None:
    """'a.7.w' is read by two rules; the one of 'n.w' is second, so the diagnostic is at the
    first (line 5), as matching the name would find, not at the rule it was formatted from
    (the short cut that skips the match applies only where no other rule can match)."""
    from archcomp.base.errors import SpecError
    from archcomp.checkpoints.plan import plan_import

    path = tmp_path / "m.yaml"
    path.write_text(
        "archcomp_mapping: 1\nspec: gpt2\ncheckpoint: {model_type: x, architecture: X}\n"
        "tensors:\n  a.{i}.w: m.{i}.w\n  a.7.w: n.w\n  b.{i}: o.{i}\n"
    )
    mapping = load_mapping(path)
    model = {"m.1.w": (1,), "n.w": (1,), "o.3": (1,)}
    with pytest.raises(SpecError) as err:
        plan_import(mapping, {}, {"a.1.w": (1,)}, model, {}, "model.safetensors")
    missing = {
        d.message.split("'")[3]: d.loc.line
        for d in err.value.diagnostics
        if d.code == "missing-tensor" and d.loc is not None
    }
    assert missing == {"a.7.w": 5, "b.3": 7}


def test_inputs_paragraph_names_every_input_transformers_names_otherwise() -> None:
    """docs/checkpoints.md tells a user what to call each mapped model with: every input of a
    shipped mapping's spec that is not transformers' own name is named there."""
    text = (ROOT / "docs" / "checkpoints.md").read_text()
    inputs = text[text.index("**Inputs.**") : text.index("## The shipped mappings")]
    own = {"input_ids", "attention_mask", "decoder_input_ids", "token_type_ids"}
    own |= {"pixel_values", "input_features"}
    for path in library.shipped_mappings().values():
        spec = load_mapping(path).spec
        declared = yaml.safe_load((ROOT / "archcomp" / "specs" / f"{spec}.yaml").read_text())
        for name in set(declared["inputs"]) - own:
            assert f"`{name}`" in inputs, f"{spec}: input {name} not in the Inputs paragraph"


@pytest.mark.parametrize(
    ("model_type", "related"),
    [("gpt_neo", None), ("gemma3", "'gemma3_text'"), ("llama4", None), ("qwen2_moe", "'qwen2'")],
)
def test_an_unshipped_model_type_is_not_guessed_as_another(model_type: str, related: str) -> None:
    """A model_type is no typo: GPT-Neo is not GPT-NeoX, Gemma 3 (multimodal) not Gemma 2, so
    no 'did you mean'; a shipped variant of the same family is named as another type."""
    with pytest.raises(UsageError) as info:
        library.by_model_type(model_type, lambda m: None)
    msg = str(info.value)
    assert f"no shipped mapping reads model_type '{model_type}'" in msg
    assert "did you mean" not in msg
    if related:
        assert f"(a related model_type ships: {related}, for its own checkpoints)" in msg
    else:
        assert "related" not in msg
