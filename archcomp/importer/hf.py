"""``archcomp import --hf``: a transformers checkpoint folder's model as a spec.

The class config.json names (``architectures``) is built from the config on the meta device (no
weight is read), traced with ``torch.export`` (transformers' models do not trace with plain
torch.fx) on meta ``input_ids``, and its module hierarchy read back (:mod:`.scopes`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from archcomp.base.errors import UsageError
from archcomp.importer import ImportFailure

_WIDTHS = ("vocab_size", "hidden_size", "intermediate_size", "head_dim")


def load_meta_model(folder: Path) -> Any:
    """The transformers model config.json describes, on meta, in eval mode, with SDPA."""
    try:
        import transformers
    except ImportError:
        raise UsageError(
            "--hf needs transformers: pip install 'archcomp[hf]' (or transformers)"
        ) from None
    import torch

    if not folder.exists():
        raise UsageError(f"{folder}: no such checkpoint folder")
    if folder.is_file():
        raise UsageError(f"{folder} is a file: give the checkpoint folder that holds config.json")
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise UsageError(f"{folder}: no config.json (a transformers checkpoint folder has one)")
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"{cfg_file}: not readable JSON: {e}") from None
    archs = raw.get("architectures") if isinstance(raw, dict) else None
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise UsageError(f"{cfg_file}: no 'architectures' naming the transformers class")
    cls = getattr(transformers, archs[0], None) if archs[0].isidentifier() else None
    if not isinstance(cls, type) or not issubclass(cls, transformers.PreTrainedModel):
        raise UsageError(
            f"{cfg_file}: architectures[0] {archs[0]!r} is no transformers model class"
        )
    try:
        config = transformers.AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
        if getattr(cls, "_supports_sdpa", False):
            config._attn_implementation = "sdpa"  # one F.scaled_dot_product_attention a layer
        with torch.device("meta"):
            model = cls(config)
    except Exception as e:  # transformers' own refusal of the config, in one line
        raise UsageError(f"{cfg_file}: transformers cannot build {archs[0]}: {e}") from None
    _untie_saved(model, folder)
    return model.eval()


def _untie_saved(model: Any, folder: Path) -> None:
    """Ties the folder's weights keep apart, untied on meta as transformers' loader does.

    transformers 5 reads T5 v1.1's saved ``tie_word_embeddings: false`` back as true, then
    leaves ``lm_head.weight`` untied on load because the folder holds both tensors. Where
    both names of a tie are in the folder's headers (no tensor is read), the later one gets a
    parameter of its own. A folder of config.json alone keeps every tie.
    """
    import torch

    from archcomp.checkpoints.files import CheckpointFileError, open_checkpoint
    from archcomp.importer.shared import shared_params

    try:
        saved = open_checkpoint(folder).tensors
    except CheckpointFileError:
        return
    for name, owner in shared_params(model).items():
        if name in saved and owner in saved:
            path, _, attr = name.rpartition(".")
            p = model.get_parameter(name)
            own = torch.nn.Parameter(torch.empty_like(p), requires_grad=p.requires_grad)
            setattr(model.get_submodule(path), attr, own)


def import_hf(folder: str | Path, *, name: str | None = None, attention_mask: bool = False) -> str:
    """The spec of the transformers model in ``folder`` (its config.json) as YAML text; with
    ``attention_mask``, a decoder's padding mask as a second input (archcomp/importer/padding.py:
    a mask read otherwise is refused at the call that reads it)."""
    from torch import fx

    from archcomp.importer import hf_inputs
    from archcomp.importer.emit import spec_text
    from archcomp.importer.exported import Flat, export_model
    from archcomp.importer.padding import padding_masks
    from archcomp.importer.params import config_values, name_params
    from archcomp.importer.scopes import Walker
    from archcomp.importer.unify import used
    from archcomp.importer.verify import check_problems

    folder = Path(folder)
    model = load_meta_model(folder)
    examples = hf_inputs.examples(model, padded=attention_mask)
    dims = hf_inputs.dims_of(examples)
    ep = export_model(model, hf_inputs.tensors(examples) | {"use_cache": False})
    flat = Flat.read(ep, model)
    flat.padding, flat.padded = padding_masks(flat)  # BERT's, Llama's attention_mask
    values = config_values(model.config)
    widths = [values[k] for k in _WIDTHS if k in values]  # shape comments name these
    sizes = {values[k]: k for k in _WIDTHS if k in values and widths.count(values[k]) == 1}
    w = Walker(flat, hf_inputs.leading(examples), sizes, batches=hf_inputs.batches(examples))
    names = [e.name for e in examples]
    given = sorted(
        (n for n in flat.inputs if flat.inputs[n] in names),
        key=lambda n: names.index(flat.inputs[n]),
    )
    results = [o for o in flat.outputs if isinstance(o, fx.Node)]  # in the output's order
    body = w.body("", given, [flat.inputs[g] for g in given], results)
    if w.problems or body is None:
        raise ImportFailure(w.problems)
    w.blocks = used(w.blocks, body)  # a run's copies merged into one leave theirs behind
    params = name_params(w.blocks, body, values)
    outs = body["outputs"]
    keys = _output_names(ep)
    if isinstance(outs, str):
        body["outputs"] = {keys[0] if keys else "out": outs}
    elif isinstance(outs, dict) and len(keys) == len(outs):  # logits, BERT's two heads
        body["outputs"] = dict(zip(keys, outs.values(), strict=True))
    model_type = getattr(model.config, "model_type", None) or "model"
    inputs = hf_inputs.declared(examples)
    source = f"transformers' {type(model).__name__} ({folder.name}/config.json)"
    text = spec_text(name or _ident(model_type), inputs, dims, w.blocks, body, source, params)
    bad = check_problems(text)
    if bad:
        raise ImportFailure(bad)
    return text


def _output_names(ep: Any) -> list[str]:
    """``['logits']``: the fields of the model's output that are tensors; a nested output's
    fields joined to its own name (CLIP's ``text_model_output_pooler_output``)."""
    return _leaves(ep.call_spec.out_spec, "")


def _leaves(spec: Any, prefix: str) -> list[str]:
    ctx, kids = getattr(spec, "context", None), _kids(spec)
    if not isinstance(ctx, list) or len(ctx) != len(kids):
        return [prefix] if prefix else []
    out: list[str] = []
    for key, kid in zip(ctx, kids, strict=True):
        name = f"{prefix}_{key}" if prefix else str(key)
        out += _leaves(kid, name) if _kids(kid) else [name]
    return out


def _kids(spec: Any) -> list[Any]:
    """A pytree spec's children (``children()`` in newer torch, ``children_specs`` before)."""
    get = getattr(spec, "children", None)
    return list(get() if callable(get) else getattr(spec, "children_specs", None) or [])


def _ident(text: str) -> str:
    from archcomp.importer.trace import _snake

    return _snake(text)
