"""The Python API of the compiler: :func:`build`, :func:`save`, :func:`load`, :func:`summary`,
the interactive :func:`view`, and published weights: :func:`from_pretrained`,
:func:`save_pretrained`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archcomp.backends.torch.devices import MAX_INIT_FLOPS
from archcomp.backends.torch.options import BuildOptions
from archcomp.frontend.build import SpecSource
from archcomp.passes.pipeline import load_graph

if TYPE_CHECKING:
    from torch import nn

    from archcomp.backends.graphviz.view import View
    from archcomp.backends.torch.module import ArchModule
    from archcomp.backends.torch.summary import Summary
    from archcomp.ir import Graph


def build(
    spec_or_path: SpecSource,
    params: Mapping[str, Any] | None = None,
    device: Any = None,
    dtype: Any = None,
    seed: int | None = None,
    *,
    max_memory: int | str | None = None,
    progress: bool | None = None,
    max_init_flops: float | None = MAX_INIT_FLOPS,
    activation_checkpointing: bool = False,
) -> ArchModule:
    """Compile a spec into a ``torch.nn.Module`` (an :class:`ArchModule`).

    ``spec_or_path`` is a path, a YAML string or a parsed spec; ``params`` override the spec's
    params. The module is built directly on ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``,
    ``meta`` or ``auto``; default cpu) in ``dtype`` (default float32). With ``seed`` the weights
    are bit-identical across builds; without it they come from torch's global RNG.

    Before allocating, the bytes the build keeps and needs at its peak (temporaries of the
    costliest node, such as a sinusoidal table's or an orthogonal initializer's) are
    estimated from the graph; a build that would not fit the device's free memory (or
    ``max_memory`` bytes, e.g. ``"8GB"``), or whose initializers need more than
    ``max_init_flops`` floating-point operations (None: no limit), is refused with a
    :class:`UsageError`. ``progress`` shows allocation and initialisation progress: ``None``
    (default) on a terminal or in a notebook when the step takes over half a second, ``True``
    always, ``False`` never (see :mod:`archcomp.base.progress`).

    ``activation_checkpointing``: each copy of a repeated block runs under non-reentrant
    activation checkpointing (``torch.utils.checkpoint``, ``use_reentrant=False``): its
    activations are recomputed in the backward pass instead of kept. Module tree, parameters
    and state-dict keys are those of the plain build (see docs/scaling.md).
    """
    g = load_graph(spec_or_path, params)
    options = BuildOptions(
        device,
        dtype,
        seed,
        max_memory=max_memory,
        progress=progress,
        max_init_flops=max_init_flops,
        activation_checkpointing=activation_checkpointing,
    )
    return build_graph(g, options)


def build_graph(g: Graph, options: BuildOptions | None = None, /, **changes: Any) -> ArchModule:
    """Compile an already checked graph (see :func:`build`) with ``options``, any keyword
    changing one of them (``build_graph(g, device="meta", seed=0)``); torch is imported only
    here."""
    from archcomp.backends.torch.build import build_graph as build_module

    return build_module(g, options, **changes)


def save(
    model: nn.Module, path: str | Path, *, force: bool = False, progress: bool | None = None
) -> Path:
    """Write ``model``'s weights as safetensors with its spec embedded (atomically). An
    existing ``path`` is a :class:`UsageError` unless ``force`` (as ``archcomp build --force``
    and ``save_pretrained(..., force=True)``). ``progress`` shows hashing and writing as
    :func:`build` shows allocation."""
    from archcomp.backends.torch.artifact import save_artifact

    return save_artifact(
        model, Path(path), overwrite=force, progress=progress, force_flag="force=True"
    )


def load(
    path: str | Path,
    device: Any = None,
    dtype: Any = None,
    *,
    max_memory: int | str | None = None,
) -> ArchModule:
    """Rebuild a model from an artifact written by :func:`save` or ``archcomp build``.

    The model is rebuilt from the spec texts and overrides the artifact stores (imports are
    read from those texts, never from the disk). The embedded spec's SHA-256 and the weights'
    SHA-256 are verified, and the names, shapes and dtypes of the stored tensors must match
    the rebuilt model exactly. Nothing is unpickled. A model whose peak memory (its weights,
    its buffers, the temporaries of its costliest node and one tensor being read) exceeds the
    device's free memory or ``max_memory`` (e.g. ``"2GB"``) is refused before anything is
    allocated: an artifact of a few hundred bytes can ask for a table of gigabytes.
    """
    from archcomp.backends.torch.artifact import load_artifact

    return load_artifact(Path(path), device=device, dtype=dtype, max_memory=max_memory)


ARTIFACT_SUFFIX = ".safetensors"


def is_artifact(source: object) -> bool:
    """A path (``str`` or ``Path``) that names an artifact rather than a spec."""
    if isinstance(source, Path):
        return source.suffix == ARTIFACT_SUFFIX
    return isinstance(source, str) and "\n" not in source and source.endswith(ARTIFACT_SUFFIX)


def graph_of(source: object, params: Mapping[str, Any] | None = None) -> Graph:
    """The checked graph of a spec (a shipped name, path, YAML text or mapping), a
    :class:`Graph`, an artifact (``.safetensors``: its embedded spec, verified; no weight
    read) or a model built by archcomp."""
    from archcomp.base.errors import UsageError
    from archcomp.ir import Graph
    from archcomp.passes.pipeline import model_graph

    if isinstance(source, Graph):
        return source
    if is_artifact(source):
        if params:
            raise UsageError("params apply to a spec; an artifact's params are fixed")
        from archcomp.backends.torch.artifact import artifact_graph

        return artifact_graph(Path(str(source)))
    if isinstance(source, (str, Path, Mapping)):
        return load_graph(source, params)
    built = model_graph(source, params)
    if built is None:
        raise UsageError(
            "expected a spec (a shipped name, path, YAML text or mapping), an artifact, a Graph "
            f"or a model built by archcomp, not {type(source).__name__}"
        )
    return built


def summary(
    spec_or_model: SpecSource | Graph | nn.Module,
    params: Mapping[str, Any] | None = None,
    *,
    dtype: Any = None,
    optimizer: str = "adamw",
    activation_checkpointing: bool = False,
    world_size: int | None = None,
    dims: Mapping[str, int] | None = None,
) -> Summary:
    """Per-node and per-block table (op, output shape, parameters, memory, activations, MACs)
    and totals, built on the meta device: nothing is allocated.

    ``spec_or_model`` is a spec (a shipped name, path, YAML text or mapping), a checked
    :class:`Graph`, an artifact (a ``.safetensors`` path) or a model built by archcomp.

    Memory is in ``dtype`` (default float32); the training step counts gradients, the state
    of ``optimizer`` (``adamw``, ``sgd`` with momentum, or ``none``) and the activations of
    one training forward at the spec's ``dims``; ``activation_checkpointing`` estimates them
    with every repeated block checkpointed (see :mod:`archcomp.backends.torch.memory`).
    ``dims`` sets the sizes of the inputs' dims (``{"B": 8, "T": 512}``) over the spec's own
    ``dims``; a dim set by neither is 1, and the summary says so.
    ``world_size``: also the per-rank memory of FSDP over that many ranks
    (:func:`archcomp.distributed.shard`; docs/scaling.md).
    In a notebook the summary shows as an HTML table; ``print`` shows the text table.
    """
    from archcomp.backends.torch.summary import summarize

    return summarize(
        graph_of(spec_or_model, params),
        dtype=dtype,
        optimizer=optimizer,
        checkpointing=activation_checkpointing,
        world_size=world_size,
        dims=dims,
    )


def from_pretrained(
    checkpoint: str | Path,
    spec: SpecSource | None = None,
    device: Any = None,
    dtype: Any = None,
    *,
    mapping: str | Path | None = None,
    max_memory: int | str | None = None,
    params: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> ArchModule:
    """The compiled spec with a published checkpoint's weights, in eval mode; no file written.

    ``checkpoint`` is a local folder with config.json and ``model.safetensors`` (or a sharded
    ``model.safetensors.index.json``), as transformers' ``save_pretrained`` writes. The
    mapping (``mapping``, else the shipped one for config.json's ``model_type``) gives the
    spec and its params; ``spec`` replaces the mapping's spec. Strict: every checkpoint
    tensor is used or dropped by the mapping, every model tensor filled, shapes and dtypes
    equal (``dtype`` casts; default: the checkpoint's), ties held; else a
    :class:`SpecError` naming each key. Tensors are memory-mapped and, on the CPU, shared
    copy-on-write with the file where a view suffices (as transformers does). Pickled
    checkpoints are refused (a :class:`UsageError`): archcomp never unpickles. A model whose
    weights need more than ``max_memory`` bytes (e.g. ``"8GB"``; ``convert --max-memory``) or
    the device's free memory is refused (a :class:`UsageError`) before any tensor is read.
    ``params`` sets spec params the checkpoint does not fix (a convolutional net's image size);
    one the mapping reads from config.json is a :class:`UsageError`.

    The model returns a :class:`ModelOutput`, as transformers' models do: ``out.logits``,
    ``out["logits"]``, ``out[0]``, under the spec's output names (``logits_per_image`` for
    CLIP, ``last_hidden_state`` for Dinov2); ``return_dict=False``: the tensor (or a dict of
    tensors, for several outputs), as :func:`build`'s model returns.
    """
    from archcomp.checkpoints.load import from_pretrained as load

    return load(
        checkpoint,
        spec,
        device,
        dtype,
        mapping=mapping,
        max_memory=max_memory,
        params=params,
        return_dict=return_dict,
    )


def save_pretrained(
    model: nn.Module | str | Path,
    directory: str | Path,
    *,
    mapping: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Write ``model`` (or the artifact at that path) as a transformers checkpoint folder:
    config.json and model.safetensors, which ``from_pretrained`` of transformers loads.

    The mapping is the shipped one for the model's spec (by name) unless given. Refused when
    the mapping cannot describe the model (a param without a config field, another spec), or
    ``directory`` holds those files already and ``force`` is false."""
    from archcomp.checkpoints.export import save_pretrained as export

    if isinstance(model, (str, Path)):
        model = load(model)
    return export(model, directory, mapping=mapping, force=force)  # type: ignore[arg-type]


def view(
    spec_or_model: SpecSource | Graph | nn.Module,
    params: Mapping[str, Any] | None = None,
    *,
    dims: Mapping[str, int] | None = None,
    expand: tuple[str, ...] | list[str] = (),
    direction: str = "auto",
    dropout: bool = False,
    max_states: int | None = None,
    timeout: float | None = None,
) -> View:
    """The interactive view: one self-contained HTML page (no network) with the figure,
    pan and zoom, blocks that open and close in place, each box's op, arguments, shapes
    (symbolic and at ``dims``), parameters, MACs, memory and spec line, and a search box.
    ``View.save(path)`` writes it; a notebook shows it in place. The page holds at most
    ``max_states`` pre-rendered figures (default 24; docs/diagrams.md)."""
    from archcomp.backends.graphviz.boxes import DrawOptions
    from archcomp.backends.graphviz.render import DEFAULT_TIMEOUT
    from archcomp.backends.graphviz.view import MAX_STATES, Figures, View, view_html
    from archcomp.backends.torch.summary import summarize
    from archcomp.base.errors import UsageError

    if direction not in ("auto", "BT", "LR"):
        raise UsageError(f"direction must be auto, BT or LR, not {direction!r}")
    g = graph_of(spec_or_model, params)
    s = summarize(g, dims=dims)
    figures = {
        r.name: Figures(
            _shape_at(g.nodes[r.name], s.dims),
            r.parameters,
            r.macs,
            r.memory_bytes,
            r.activation_bytes,
        )
        for r in s.rows
        if r.name in g.nodes
    }
    at = ", ".join(f"{k}={v}" for k, v in s.dims.items())
    opts = DrawOptions(expand=tuple(expand), direction=direction, dropout=dropout)  # type: ignore[arg-type]
    page = view_html(
        g,
        figures,
        opts=opts,
        dims=at,
        max_states=MAX_STATES if max_states is None else max_states,
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
    )
    return View(g.name, page)


def _shape_at(node: Any, sizes: Mapping[str, int]) -> str:
    """A node's output shapes with its symbols at ``sizes``: ``[8, 2048, 4096]``."""
    from archcomp.backends.torch.memory import concrete

    shapes = {k: [concrete(d, sizes) for d in t.shape] for k, t in node.outputs.items()}
    if len(shapes) == 1:
        return str(next(iter(shapes.values())))
    return ", ".join(f"{k} {v}" for k, v in shapes.items())


def _notebook_view(obj: object) -> str:
    """What a Graph or a built model shows in a notebook: its view, in an ``<iframe>``."""
    from archcomp.backends.graphviz.view import iframe

    return iframe(view(obj).html)  # type: ignore[arg-type]


def _install_notebook_view() -> None:
    from archcomp.base.display import set_html_view

    set_html_view(_notebook_view)


_install_notebook_view()


def import_module(
    module: nn.Module,
    example_inputs: Mapping[str, Any] | tuple[Any, ...],
    *,
    dims: Mapping[str, int | tuple[str, int] | list[tuple[str, int]]] | None = None,
    name: str | None = None,
) -> str:
    """The spec of a PyTorch module as YAML text, its node ids the module's paths, so the
    module's own ``state_dict`` loads into the built spec with no mapping (docs/import.md).

    ``example_inputs``: the forward's keyword arguments (a dict) or positional ones (a tuple);
    a bool, int, float or None among them is a constant (``tgt_is_causal=True``), not an input.
    ``dims`` names symbolic dims: ``{"B": 0}`` (dim 0 of every input), ``{"T": ("ids", 1)}``, or
    several places ``{"T": [("tgt", 1), ("tgt_mask", 0), ("tgt_mask", 1)]}``. An attention mask
    causal on the example becomes ``causal: true`` and no input (judged on its values).
    A call archcomp cannot express is an :class:`~archcomp.importer.ImportFailure` (a
    :class:`UsageError`) listing each one with its source line; nothing is approximated."""
    from archcomp.importer import import_module as run

    return run(module, example_inputs, dims=dims, name=name)
