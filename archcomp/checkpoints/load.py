"""A checkpoint folder -> the compiled spec with its weights (``from_pretrained``, ``convert``).

In order, each stage checked in full before the next, so a bad input ends before any tensor
is read or any file written:

1. the folder: config.json and the safetensors headers (:mod:`~archcomp.checkpoints.files`);
2. the mapping (given, or the shipped one for config.json's ``model_type``) and the spec;
3. config.json -> the spec's params; the fields the spec fixes are checked;
4. the spec is compiled with its parameters on meta (only modules with buffers allocated);
5. the plan: every key and shape matched (:mod:`~archcomp.checkpoints.plan`);
6. the tensors, memory-mapped and moved one at a time; views stay views (a transposed
   Conv1D weight is not copied), so a CPU load allocates little beyond what the transforms
   must copy; ties in the checkpoint are compared.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archcomp.base.errors import Diagnostic, Reporter, SpecError, UsageError
from archcomp.base.text import visible
from archcomp.checkpoints import library
from archcomp.checkpoints.config import (
    ConfigProblem,
    allowed,
    applied,
    same_value,
    spec_params,
    with_defaults,
)
from archcomp.checkpoints.files import (
    Checkpoint,
    CheckpointFileError,
    open_checkpoint,
    torch_dtype,
)
from archcomp.checkpoints.hf_renames import hf_renamer, hf_renames, hf_stacks, renamed
from archcomp.checkpoints.mapping import Mapping, load_mapping, parse_mapping
from archcomp.checkpoints.patterns import KeyIndex
from archcomp.checkpoints.plan import Plan, plan_import
from archcomp.frontend.build import SpecSource
from archcomp.passes.pipeline import load_graph

if TYPE_CHECKING:
    import torch

    from archcomp.backends.torch.module import ArchModule
    from archcomp.ir import Graph

FLOATS = ("F64", "F32", "F16", "BF16")


@dataclass
class Source:
    """A checkpoint matched with its mapping and spec, before any tensor is read."""

    checkpoint: Checkpoint
    mapping: Mapping
    graph: Graph
    keys: dict[str, str]  # the mapping's name of each checkpoint tensor -> its name in the file


def resolve(
    checkpoint: str | Path,
    spec: SpecSource | None = None,
    mapping: str | Path | None = None,
    params: MappingABC[str, Any] | None = None,
) -> Source:
    """Stages 1-3: the folder, the mapping, the spec at the checkpoint's params (and
    ``params``, values of those the checkpoint does not fix)."""
    ck = open_checkpoint(Path(checkpoint))
    given = dict(params or {})
    if mapping is not None:
        return _resolved(ck, load_mapping(Path(mapping)), spec, given)
    try:
        chosen = library.by_model_type(
            ck.config.get("model_type"), lambda m: _misfit(ck, m, spec, given)
        )
        return _resolved(ck, chosen, spec, given)
    except (SpecError, UsageError) as exc:
        # no shipped mapping reads it into this spec: a spec whose tensors are the checkpoint's
        # own keys (from `archcomp import --hf`) loads each by its name
        identity = _identity(ck, spec, given) if spec is not None else None
        if isinstance(identity, str):
            first = str(exc).splitlines()[0]
            raise UsageError(
                f"{ck.folder}: the spec's tensors are not the checkpoint's own keys ({identity}),"
                f" and no shipped mapping reads it into the spec ({first})"
            ) from None
        if identity is None:
            raise
        return _resolved(ck, identity, spec, given)


def _resolved(
    ck: Checkpoint, chosen: Mapping, spec: SpecSource | None, given: dict[str, Any]
) -> Source:
    rep = Reporter()
    rep.extend(_check_identity(ck, chosen))
    g = None
    try:
        g = _graph(ck, chosen, spec, given)
    except SpecError as exc:
        rep.extend(exc.diagnostics)
    rep.extend(_check_config(ck, chosen, g.params if g is not None else None))
    if g is not None:
        try:
            chosen = applied(chosen, g.params)  # the rules whose 'when' holds
        except ConfigProblem as exc:
            rep.add(_config_diag(ck, chosen, exc))
    rep.raise_if_failed()
    assert g is not None
    return Source(ck, chosen, g, _logical_keys(ck, chosen))


def _identity(
    ck: Checkpoint, spec: SpecSource, given: MappingABC[str, Any]
) -> Mapping | str | None:
    """A mapping that reads every tensor by its own name, when the spec's model has a tensor
    of every checkpoint key (a spec from ``archcomp import --hf``, whose node ids are the
    module paths; a key transformers renames on loading, GPT-NeoX's legacy ``embed_out``, by
    its new name); else the keys it lacks, in words, or None where the spec does not build.
    Tried only where no shipped mapping fits."""
    import yaml

    from archcomp.backends.torch.build import build_graph
    from archcomp.frontend.source import load_yaml

    try:
        keys = set(build_graph(load_graph(spec, given), device="meta").state_dict())
    except (SpecError, UsageError):
        return None
    names = list(ck.tensors)
    arch = ck.config.get("architectures")
    first = arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else None
    model_type = ck.config.get("model_type")
    renames = hf_renames(first, model_type if isinstance(model_type, str) else None)
    tensors: dict[str, Any] = renamed(names, keys, renames)  # own names, transformers' renames
    renamer = None
    if names and len(tensors) != len(names):  # sub-models' scoped renames, chained (ViT)
        renamer = hf_renamer(ck.folder, first)
        tensors = renamed(names, keys, renames, renamer)
    missing = [n for n in names if n not in tensors]
    if missing:  # experts saved one by one, stacked as transformers loads them (Mixtral)
        rules, read = hf_stacks(ck.folder, first, missing, _rename(renames, renamer))
        if read == set(missing) and all(r["to"] in keys for r in rules.values()):
            tensors |= rules
            missing = []
    if not names:
        return None
    if missing:
        shown = ", ".join(repr(n) for n in missing[:3]) + (", ..." if len(missing) > 3 else "")
        return f"{len(missing)} checkpoint tensor(s) the spec has no tensor for: {shown}"
    decl = {
        "archcomp_mapping": 1,
        "description": "each tensor by its own name",
        "spec": "the given spec",
        "checkpoint": {
            "model_type": str(ck.config.get("model_type") or "unknown"),
            "architecture": str(arch[0] if isinstance(arch, list) and arch else "unknown"),
        },
        "tensors": tensors,
    }
    raw, doc = load_yaml(yaml.safe_dump(decl, sort_keys=False), "(identity mapping)")
    return parse_mapping(raw, doc)


def _rename(
    renames: list[tuple[str, str]], renamer: Callable[[str], str] | None
) -> Callable[[str], str]:
    """A key as the model names it: transformers' chained renamer, else its plain renames."""
    if renamer is not None:
        return renamer

    def plain(key: str) -> str:
        for src, tgt in renames:
            key = re.sub(src, tgt, key)
        return key

    return plain


def _misfit(
    ck: Checkpoint, m: Mapping, spec: SpecSource | None, given: MappingABC[str, Any]
) -> str | None:
    try:
        g = _graph(ck, m, spec, given)
    except (SpecError, UsageError) as exc:
        return str(exc).splitlines()[0]
    problems = _check_identity(ck, m) + _check_config(ck, m, g.params)
    return problems[0].message if problems else None


def _graph(
    ck: Checkpoint, m: Mapping, spec: SpecSource | None, given: MappingABC[str, Any]
) -> Graph:
    shapes = {k: ck.tensors[v].shape for k, v in _logical_keys(ck, m).items()}
    try:
        config = with_defaults(m, ck.config)
        params = spec_params(m, config, shapes)
    except ConfigProblem as exc:
        raise SpecError([_config_diag(ck, m, exc)]) from None
    fixed = sorted(set(given) & set(params))
    if fixed:
        raise UsageError(
            f"param '{fixed[0]}' is fixed by the checkpoint ({m.file} reads it from "
            "config.json); -p sets only params the checkpoint does not fix"
        )
    source = spec if spec is not None else library.resolve_spec(m)
    try:
        return load_graph(source, {**params, **given})
    except UsageError as exc:
        if re.search(r"param '\w+'", str(exc)) is None:
            raise  # not about a value config.json gave (the spec file, say)
        raise SpecError([_param_diag(ck, m, params, str(exc))]) from None


def _config_diag(ck: Checkpoint, m: Mapping, exc: ConfigProblem) -> Diagnostic:
    if exc.field is not None and _mark(ck, exc.field) is not None:
        return ck.config_doc.diag(
            "config-field",
            exc.message,
            _mark(ck, exc.field) or (),
            key=True,
            hint=exc.hint,
            related=(m.doc.loc(exc.path),),
        )
    return m.diag("config-field", exc.message, exc.path, hint=exc.hint)


def _param_diag(
    ck: Checkpoint, m: Mapping, params: MappingABC[str, Any], message: str
) -> Diagnostic:
    """A param the checkpoint's config gives that the spec refuses (``N = -1``)."""
    found = re.search(r"param '(\w+)'", message)
    param = found.group(1) if found else None
    field = m.params.get(param or "")
    if param is not None and isinstance(field, str) and _mark(ck, field) is not None:
        return ck.config_doc.diag(
            "invalid-param",
            f"{field} = {params.get(param)!r} (the spec's param '{param}'): {message}",
            _mark(ck, field) or (),
            key=True,
            related=(m.doc.loc(("params", param)),),
        )
    return Diagnostic("invalid-param", f"{ck.config_doc.file}: {message}")


def _check_identity(ck: Checkpoint, m: Mapping) -> list[Diagnostic]:
    out = []
    mt = ck.config.get("model_type")
    if mt != m.model_type:
        out.append(
            _at(
                ck,
                "model_type",
                f"model_type is {_json(mt)}; {m.file} reads {_json(m.model_type)} checkpoints",
                m.doc.loc(("checkpoint", "model_type")),
            )
        )
    archs = ck.config.get("architectures")
    if isinstance(archs, list) and archs and m.architecture not in archs:
        out.append(
            _at(
                ck,
                "architectures",
                f"architectures is {_json(archs)}; {m.file} reads {m.architecture} checkpoints",
                m.doc.loc(("checkpoint", "architecture")),
            )
        )
    return out


def _mark(ck: Checkpoint, field: str) -> tuple[str] | None:
    """Where config.json writes ``field`` (a nested field: its top-level object)."""
    top = (field.split(".", 1)[0],)
    return top if top in ck.config_doc.key_marks else None


def _json(value: Any) -> str:
    """A config value as config.json writes it (null, true, "gelu")."""
    import json

    text = visible(json.dumps(value, ensure_ascii=False))
    return text if len(text) <= 80 else text[:77] + "..."


def _at(ck: Checkpoint, field: str, message: str, related: Any) -> Diagnostic:
    mark = _mark(ck, field)
    if mark is not None:
        return ck.config_doc.diag("config-field", message, mark, key=True, related=(related,))
    return Diagnostic("config-field", f"{ck.config_doc.file}: {message}", related=(related,))


def _check_config(ck: Checkpoint, m: Mapping, env: MappingABC[str, Any] | None) -> list[Diagnostic]:
    """Every field the mapping says the spec fixes holds the value it fixes (without the
    spec's params, ``env`` None, only the fields whose values need none)."""
    out: list[Diagnostic] = []
    try:
        config = with_defaults(m, ck.config)
    except ConfigProblem as exc:
        return [_config_diag(ck, m, exc)]
    for name, req in m.config.items():
        try:
            values = allowed(req, env if env is not None else {})
        except ConfigProblem as exc:
            if env is not None:
                out.append(m.diag("invalid-value", exc.message, exc.path, hint=exc.hint))
            continue
        shown = " or ".join(_json(v) for v in values)
        if name not in config:
            out.append(
                Diagnostic(
                    "config-field",
                    f"{ck.config_doc.file} has no field '{name}', which the spec fixes to {shown}",
                    m.doc.loc(req.path, key=True),
                    source_line=m.doc.line_text(m.doc.loc(req.path, key=True).line),
                    hint="add transformers' default for it to the mapping's defaults",
                )
            )
        elif not any(same_value(config[name], v) for v in values):
            out.append(
                _at(
                    ck,
                    name,
                    f"{name} is {_json(config[name])}; the spec fixes it to {shown}, so these "
                    "weights would compute something else in it",
                    m.doc.loc(req.path),
                )
            )
    return out


def _logical_keys(ck: Checkpoint, m: Mapping) -> dict[str, str]:
    """Names the mapping reads -> names in the file: a base-model checkpoint (the hub's
    ``gpt2``) lacks the prefix its task model's keys have; the mapping's names have it."""
    names = list(ck.tensors)
    prefix = m.prefix
    if prefix and names and not any(n.startswith(prefix) for n in names):
        return {prefix + n: n for n in names}
    return {n: n for n in names}


def checkpoint_dtypes(src: Source) -> dict[str, str]:
    """The floating dtypes of the checkpoint's tensors (dropped ones do not count), each with
    a tensor that has it."""
    drops = KeyIndex.of((k, r) for r in src.mapping.rules if r.kind == "drop" for k in r.hf)
    seen: dict[str, str] = {}
    for logical, name in src.keys.items():
        code = src.checkpoint.tensors[name].dtype
        if code in FLOATS and code not in seen and not drops.find(logical):
            seen[code] = name
    return dict(sorted(seen.items()))


def from_pretrained(
    checkpoint: str | Path,
    spec: SpecSource | None = None,
    device: Any = None,
    dtype: Any = None,
    *,
    mapping: str | Path | None = None,
    max_memory: int | str | None = None,
    params: MappingABC[str, Any] | None = None,
    return_dict: bool = True,
) -> ArchModule:
    """See :func:`archcomp.from_pretrained`. ``max_memory`` bounds the model's bytes on every
    device (``convert --max-memory``), before any tensor is read."""

    from archcomp.backends.torch.build import build_graph
    from archcomp.backends.torch.devices import (
        check_fits,
        estimate,
        parse_bytes,
        resolve_device,
        resolve_dtype,
    )
    from archcomp.backends.torch.module import tied_names

    src = resolve(checkpoint, spec, mapping, params)
    ck, g = src.checkpoint, src.graph
    dev = resolve_device(device)
    if dev.type == "meta":
        raise UsageError("from_pretrained loads weights; build on meta with archcomp.build")
    stored = checkpoint_dtypes(src)
    if dtype is None and len(stored) > 1:
        listed = ", ".join(f"{code} ('{key}')" for code, key in stored.items())
        raise UsageError(
            f"the checkpoint's floating tensors mix dtypes: {listed}; pass a dtype to cast "
            "them all to one"
        )
    target = resolve_dtype(dtype) if dtype is not None else torch_dtype(next(iter(stored), "F32"))
    cast = any(torch_dtype(code) != target for code in stored)
    budget = parse_bytes(max_memory) if max_memory is not None else None
    # On every device: the weights end up resident (copied, or mapped and read).
    check_fits(estimate(g, target), dev, budget, command="convert")
    model = build_graph(g, device=dev, dtype=target, params_on_meta=True, command="convert")
    ties = tied_names(model)
    model_shapes, aliases = _state_shapes(model, ties)
    shapes = {k: ck.tensors[v].shape for k, v in src.keys.items()}
    plan = plan_import(src.mapping, g.params, shapes, model_shapes, aliases, ck.weights_name)
    state = model.state_dict(keep_vars=True)
    _check_dtypes(src, plan, state, cast)
    _fill(model, src, plan, state, aliases, dev, target)
    model.decoder_start_token_id = decoder_start(ck)
    model.generation_rules = generation_rules(ck.folder / "generation_config.json")
    if return_dict:
        from archcomp.backends.torch.outputs import return_outputs

        return_outputs(model)
    return model.eval()


def decoder_start(ck: Checkpoint) -> int | None:
    """An encoder-decoder's first decoder token: generation_config.json's, else config.json's
    ``decoder_start_token_id`` (what generate starts the decoder from)."""
    value = ck.config.get("decoder_start_token_id")
    extra = ck.folder / "generation_config.json"
    if extra.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):  # unreadable: config's
            value = json.loads(extra.read_text()).get("decoder_start_token_id", value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# generation_config.json's token rules that generate applies (transformers' names)
RULES = ("forced_decoder_ids", "suppress_tokens", "begin_suppress_tokens")


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
    )


def generation_rules(path: Path) -> dict[str, Any]:
    """generation_config.json's ``forced_decoder_ids`` ([[index, id], ...]), ``suppress_tokens``
    and ``begin_suppress_tokens`` (lists of ids) where present and not null (Whisper's
    checkpoints have them); none without the file or from an unreadable one (as
    :func:`decoder_start`). A value of another form is refused, naming the file and key."""
    config: Any = {}
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            config = json.loads(path.read_text())
    if not isinstance(config, dict):
        return {}
    rules = {k: config[k] for k in RULES if config.get(k) is not None}
    for key, value in rules.items():
        pairs = key == "forced_decoder_ids"
        ok = (  # a forced id may be null (Whisper's language, which transformers detects)
            isinstance(value, list)
            and all(isinstance(p, list) and len(p) == 2 and _token_ids(p[:1]) for p in value)
            and all(p[1] is None or _token_ids(p[1:]) for p in value)
            if pairs
            else _token_ids(value)
        )
        if not ok:
            form = "[[index, token id], ...]" if pairs else "a list of token ids"
            raise CheckpointFileError(f"{path}: {key} must be {form}, not {value!r}")
    return rules


def _state_shapes(
    model: torch.nn.Module, ties: MappingABC[str, str]
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    state = model.state_dict(keep_vars=True)
    aliases = {k: v for k, v in ties.items() if k in state and v in state}
    return {k: tuple(t.shape) for k, t in state.items() if k not in aliases}, aliases


def _check_dtypes(src: Source, plan: Plan, state: MappingABC[str, Any], cast: bool) -> None:
    rep = Reporter()
    for step in plan.steps:
        codes = {src.checkpoint.tensors[src.keys[h]].dtype for h in step.hf}
        for name in step.spec:
            t = state[name]
            for code in codes:
                have = torch_dtype(code)
                if have == t.dtype or (cast and have.is_floating_point and t.is_floating_point()):
                    continue
                rep.add(
                    src.mapping.diag(
                        "dtype-mismatch",
                        f"checkpoint tensor '{step.hf[0]}' is {code}, model tensor '{name}' is "
                        f"{str(t.dtype).removeprefix('torch.')}",
                        step.rule.path,
                        key=True,
                    )
                )
    rep.raise_if_failed()


def _fill(
    model: torch.nn.Module,
    src: Source,
    plan: Plan,
    state: MappingABC[str, Any],
    ties: MappingABC[str, str],
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """Read each tensor (memory-mapped), transform it, and put it in the model; then compare
    the checkpoint's ties. A file that cannot be read or mapped is a usage error."""
    import torch

    ck = src.checkpoint
    with _Reader(src) as read, torch.no_grad():
        try:
            _fill_steps(model, plan, state, ties, read, device, dtype)
            broken = _broken_ties(src, plan, read)
        except (OSError, ValueError, RuntimeError, MemoryError) as exc:  # MemoryError: mmap
            raise UsageError(f"{ck.folder}: cannot read the weights: {exc}") from None
        except Exception as exc:  # safetensors' own error type (SafetensorError)
            if type(exc).__name__ != "SafetensorError":
                raise
            raise UsageError(f"{ck.folder}: cannot read the weights: {exc}") from None
    if broken:
        raise SpecError(broken)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"not filled from the checkpoint: {', '.join(left[:5])}")


class _Reader:
    """Reads checkpoint tensors by the mapping's name, each file opened (mapped) once."""

    def __init__(self, src: Source):
        import contextlib

        self.src = src
        self.stack = contextlib.ExitStack()
        self.handles: dict[Path, Any] = {}

    def __enter__(self) -> Callable[[str], torch.Tensor]:
        self.stack.__enter__()
        return self.read

    def __exit__(self, *exc: object) -> None:
        self.stack.__exit__(*exc)  # type: ignore[arg-type]

    def read(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        info = self.src.checkpoint.tensors[self.src.keys[name]]
        f = self.handles.get(info.file)
        if f is None:
            try:
                opened = safe_open(str(info.file), framework="pt", device="cpu")
            except MemoryError:
                raise UsageError(f"{info.file}: cannot map the file into memory") from None
            f = self.handles[info.file] = self.stack.enter_context(opened)
        t: torch.Tensor = f.get_tensor(info.name)
        return t


def _fill_steps(
    model: torch.nn.Module,
    plan: Plan,
    state: MappingABC[str, Any],
    ties: MappingABC[str, str],
    read: Callable[[str], torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """Each step: read its tensors, transform them, set the model's tensors (ties after)."""
    from torch import nn

    from archcomp.backends.torch.module import set_param

    made: dict[str, Any] = {}
    for step in plan.steps:
        tensors = [read(h) for h in step.hf]
        for transform in step.transforms:
            tensors = transform.apply(tensors)
        for name, t in zip(step.spec, tensors, strict=True):
            old = state[name]
            if t.is_floating_point() and t.dtype != dtype:
                t = t.to(dtype)
            if t.device != device:
                t = t.to(device)
            value = nn.Parameter(t, old.requires_grad) if isinstance(old, nn.Parameter) else t
            made[name] = value
            set_param(model, name, value)
    for alias, target in ties.items():
        if target in made:
            set_param(model, alias, made[target])


def _broken_ties(src: Source, plan: Plan, read: Callable[[str], torch.Tensor]) -> list[Diagnostic]:
    """The checkpoint's ties whose values differ."""
    import torch

    broken = []
    for key, other, rule in plan.ties:
        a, b = read(key), read(other)
        if a.dtype == b.dtype and torch.equal(a, b):
            continue
        if a.shape == b.shape:
            diff = (a.float() - b.float()).abs().max().item()
            message = (
                f"checkpoint tensor '{key}' is tied to '{other}', but their values differ "
                f"(max difference {diff:.3g})"
            )
        else:
            message = f"checkpoint tensor '{key}' differs from '{other}'"
        broken.append(
            src.mapping.diag(
                "tie-broken",
                message,
                rule.path,
                key=True,
                hint="a checkpoint with an untied head does not fit a spec that ties it",
            )
        )
    return broken
