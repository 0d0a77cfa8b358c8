"""``archcomp.from_pretrained``'s model returns its outputs by name, as transformers' models do
(``out.logits``, ``out["logits"]``, ``out[0]``), through torch.compile, torch.export,
pickling and generation; ``return_dict=False`` and ``archcomp.build`` give the tensors."""

from __future__ import annotations

import copy
import io
import re
import warnings
from pathlib import Path
from typing import Any

import numerics
import pytest
import torch
from numerics import RoundingChains

import archcomp

pytest.importorskip("transformers")
from hf_models import FAMILIES, save


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("gpt2")
    return save(FAMILIES["gpt2"], folder).eval(), folder


def _ids() -> torch.Tensor:
    return torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(1))


def test_the_output_has_the_logits_by_attribute_key_and_index(gpt2: tuple[Any, Path]) -> None:
    hf, folder = gpt2
    model = archcomp.from_pretrained(folder)
    plain = archcomp.from_pretrained(folder, return_dict=False)
    assert model.return_dict and not plain.return_dict
    with RoundingChains() as chains:
        out = model(_ids())
        want = hf(_ids()).logits
    assert isinstance(out, archcomp.ModelOutput) and isinstance(out, dict)
    numerics.assert_close(out.logits, want, chains.tolerance(torch.float32, out.logits, want))
    assert out["logits"] is out.logits and out[0] is out.logits and out[-1] is out.logits
    assert out.to_tuple() == (out.logits,) and out[:1] == (out.logits,)
    assert list(out) == ["logits"] and list(out.keys()) == list(model.output_names)
    (name,) = out  # as transformers' ModelOutput: a dict, iterated by name
    assert name == "logits"
    assert torch.equal(plain(_ids()), out.logits)  # return_dict=False: today's tensor
    with pytest.raises(AttributeError, match=re.escape("no output 'loss' (its outputs: logits)")):
        _ = out.loss
    assert repr(out).startswith("ModelOutput(logits=tensor(")
    out.logits.sum().backward()  # gradients flow through it as through the tensor
    plain(_ids()).sum().backward()
    grads = [(p.grad, q.grad) for p, q in zip(model.parameters(), plain.parameters(), strict=True)]
    assert all(a is not None and torch.equal(a, b) for a, b in grads)


def test_several_outputs_come_in_the_spec_order(tmp_path: Path) -> None:
    family = FAMILIES["dinov2_base"]
    save(family, tmp_path)
    model = archcomp.from_pretrained(tmp_path)
    built = archcomp.from_pretrained(tmp_path, return_dict=False)
    x = family.inputs(torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, plain = model(**x), built(**x)
    assert list(out) == ["last_hidden_state", "pooler_output"] == list(model.output_names)
    assert type(plain) is dict and out.keys() == plain.keys()
    assert all(torch.equal(out[k], plain[k]) for k in plain)
    assert out[1] is out.pooler_output and out.last_hidden_state is out["last_hidden_state"]


def test_compile_export_pickle_and_copies_keep_it(gpt2: tuple[Any, Path]) -> None:
    model = archcomp.from_pretrained(gpt2[1])
    ids = _ids()
    with torch.no_grad():
        want = model(ids).logits
        compiled = torch.compile(model, fullgraph=True, backend="eager")(ids)
        exported = torch.export.export(model, (ids,))
        buf = io.BytesIO()
        with warnings.catch_warnings():  # the weights share a mapped file: torch says so
            warnings.filterwarnings("ignore", "No complete tensor found", UserWarning)
            torch.export.save(exported, buf)
        buf.seek(0)
        reloaded = torch.export.load(buf).module()(ids)
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        unpickled = torch.load(buf, weights_only=False)(ids)
        copied = copy.deepcopy(model)(ids)
    for got in (compiled, exported.module()(ids), reloaded, unpickled, copied):
        assert isinstance(got, archcomp.ModelOutput) and list(got) == ["logits"]
        torch.testing.assert_close(got.logits, want, rtol=0, atol=0)


def test_generation_and_build_are_unchanged(gpt2: tuple[Any, Path]) -> None:
    model = archcomp.from_pretrained(gpt2[1])
    plain = archcomp.from_pretrained(gpt2[1], return_dict=False)
    ids = _ids()
    assert torch.equal(model.generate(ids, 4), plain.generate(ids, 4))
    cache = model.new_cache(2, 7)
    with torch.no_grad():
        step = model.forward_cached(ids, cache)
    assert isinstance(step, torch.Tensor) and torch.equal(step, plain(ids))
    assert isinstance(archcomp.build("mlp")(torch.randn(2, 10)), torch.Tensor)
