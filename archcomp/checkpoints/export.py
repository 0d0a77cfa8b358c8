"""A compiled model -> a transformers checkpoint folder (``archcomp export --to hf``).

The inverse of loading: the mapping's rules read backwards (each transform's inverse, in
reverse order), config.json made from the spec's params (each ``params`` entry read
backwards, plus every field in ``config``). Before anything is written the config is checked
to give back the model's own params and spec (:func:`check_round_trip`), so a model the
mapping cannot describe (a param it does not carry, a spec that is not the mapping's) is
refused rather than exported as a different model.

``model.safetensors`` is streamed one tensor at a time into a staged file, ``config.json``
likewise; only when both are complete are they named (``write_all``): both files or neither,
and without ``force`` an existing file is refused atomically. Tied and dropped checkpoint
keys are not written: transformers ties on load (``tie_word_embeddings``), and dropped
tensors are buffers it rebuilds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archcomp.base.errors import UsageError
from archcomp.base.fileio import OutputExists, Writer, write_all
from archcomp.checkpoints import library
from archcomp.checkpoints.config import (
    ConfigProblem,
    allowed,
    applied,
    evaluate,
    nest,
    same_value,
    spec_params,
    with_defaults,
)
from archcomp.checkpoints.files import CONFIG, WEIGHTS, write_safetensors
from archcomp.checkpoints.mapping import Mapping, load_mapping
from archcomp.checkpoints.plan import Step, plan_export, run_shapes
from archcomp.frontend.expr import ExprError, is_expression

if TYPE_CHECKING:
    import torch

    from archcomp.backends.torch.module import ArchModule

_COSMETIC = ("label", "doc", "description")


def hf_config(mapping: Mapping, env: MappingABC[str, Any], dtype: str) -> dict[str, Any]:
    """config.json for a model with params ``env``: the mapping's fields read backwards."""
    config: dict[str, Any] = {}
    for param, field in mapping.params.items():
        if isinstance(field, str) and "${" not in field and field not in config and param in env:
            config[field] = env[param]
    for name, req in mapping.config.items():
        try:
            config[name] = allowed(req, env)[0]
        except ConfigProblem as exc:
            raise UsageError(f"{mapping.file}: config field '{name}': {exc.message}") from None
        if config[name] is None and is_expression(req.values[0]):  # not this model's field
            del config[name]
    for name, value in mapping.export.items():
        try:
            config[name] = evaluate(value, env)
        except ExprError as exc:
            raise UsageError(f"{mapping.file}: export field '{name}': {exc.message}") from None
        if config[name] is None and is_expression(value):  # left out (a field not read)
            del config[name]
    config["architectures"] = [mapping.architecture]
    config["model_type"] = mapping.model_type
    config["dtype"] = dtype
    return dict(sorted(nest(config).items()))


def check_round_trip(
    mapping: Mapping,
    model_spec: MappingABC[str, Any],
    config: dict[str, Any],
    shapes: MappingABC[str, tuple[int, ...]],
) -> None:
    """The exported config (and tensor ``shapes``), read back through the mapping, give the
    model's spec again."""
    from archcomp.passes.pipeline import load_graph

    env = dict(model_spec.get("params") or {})
    try:
        params = spec_params(mapping, with_defaults(mapping, config), shapes)
    except ConfigProblem as exc:
        raise UsageError(f"{mapping.file}: {exc.message}") from None
    spec_path = library.resolve_spec(mapping)
    free = {name: env[name] for name in mapping.free if name in env}
    g = load_graph(spec_path, {**params, **free})
    for name, value in env.items():
        if name in mapping.free:
            continue
        if not same_value(g.params.get(name), value):
            source = mapping.params.get(name)
            if source is None:
                why = (
                    f"{mapping.file} carries no config.json field for it (a "
                    f"{mapping.architecture} would have {g.params.get(name)!r})"
                )
            elif isinstance(source, str):
                why = (
                    f"{mapping.file} writes it as {source} = {config.get(source)!r}, which "
                    f"reads back as {g.params.get(name)!r}"
                )
            else:
                why = f"its tensor {source.tensor} reads back as {g.params.get(name)!r}"
            raise UsageError(f"the model's param {name} is {value!r}, but {why}")
    if _structure(g.spec) != _structure(model_spec):
        raise UsageError(
            f"the model's spec is not {spec_path.name} at its params, so a "
            f"{mapping.architecture} would not compute the same function; write a mapping "
            "for its own spec and pass it with --mapping"
        )


def _structure(spec: Any) -> Any:
    """A normalized spec without its cosmetic keys (labels, docs, descriptions)."""
    if isinstance(spec, dict):
        return {k: _structure(v) for k, v in spec.items() if k not in _COSMETIC and k != "name"}
    if isinstance(spec, list):
        return [_structure(v) for v in spec]
    return spec


def save_pretrained(
    model: ArchModule,
    directory: str | Path,
    *,
    mapping: str | Path | None = None,
    force: bool = False,
) -> Path:
    """See :func:`archcomp.save_pretrained`."""
    from archcomp.backends.torch.artifact import DTYPE_CODES, _canonical_state
    from archcomp.backends.torch.devices import dtype_name

    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict) or not spec:
        raise UsageError("export needs a model built by archcomp (it reads the model's spec)")
    chosen = (
        load_mapping(Path(mapping))
        if mapping is not None
        else library.by_spec_name(str(spec.get("name")))
    )
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    taken = [n for n in (CONFIG, WEIGHTS) if (out / n).exists()]
    if taken and not force:
        raise UsageError(f"{out} already holds {' and '.join(taken)}; pass --force to replace them")
    tensors, _aliases = _canonical_state(model)
    for name, t in tensors.items():
        if t.is_meta:
            raise UsageError(f"the model is on the meta device ({name} has no data)")
    env = dict(spec.get("params") or {})
    try:
        chosen = applied(chosen, env)  # the rules whose 'when' holds
    except ConfigProblem as exc:
        raise UsageError(f"{chosen.file}: {exc.message}") from None
    shapes = {k: tuple(t.shape) for k, t in tensors.items()}
    steps = plan_export(chosen, env, shapes)
    entries: list[tuple[str, tuple[int, ...], str]] = []
    owner: dict[str, Step] = {}
    for step in steps:
        for name, shape in zip(step.spec, run_shapes(step.transforms, step.hf_shapes), strict=True):
            dt = tensors[step.hf[0]].dtype
            entries.append((name, shape, DTYPE_CODES[dt]))
            owner[name] = step
    entries.sort()
    floats = [t.dtype for t in tensors.values() if t.is_floating_point()]
    config = hf_config(chosen, env, dtype_name(floats[0]) if floats else "float32")
    check_round_trip(chosen, spec, config, {name: shape for name, shape, _ in entries})

    def produce() -> Iterator[torch.Tensor]:
        ready: dict[str, torch.Tensor] = {}
        for name, _, _ in entries:
            if name not in ready:
                step = owner[name]
                parts = [tensors[s].detach() for s in step.hf]
                for transform in step.transforms:
                    parts = transform.apply(parts)
                ready.update(zip(step.spec, parts, strict=True))
            yield ready.pop(name)

    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    outputs: list[tuple[Path, Writer]] = [
        (out / WEIGHTS, lambda tmp: write_safetensors(tmp, entries, produce(), {"format": "pt"})),
        (out / CONFIG, lambda tmp: tmp.write_text(text, encoding="utf-8")),
    ]
    try:  # both files staged in full, then named: both or neither
        write_all(outputs, overwrite=force)
    except OutputExists as exc:
        raise UsageError(f"{exc.filename} exists; pass --force to replace it") from None
    return out
