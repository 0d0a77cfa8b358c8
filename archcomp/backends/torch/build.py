"""A checked graph -> a module on a device: resolve device and dtype, refuse a build that would
not fit, compile with allocation and initialisation progress (:func:`build_graph`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from archcomp.backends.torch.checkpointing import checkpoint_blocks
from archcomp.backends.torch.codegen import compile_graph
from archcomp.backends.torch.devices import (
    check_fits,
    estimate,
    parse_bytes,
    resolve_device,
    resolve_dtype,
)
from archcomp.backends.torch.module import UNPICKLE, ArchModule
from archcomp.backends.torch.options import BuildOptions
from archcomp.base.errors import UsageError
from archcomp.base.progress import showing, task
from archcomp.ir import Graph


def build_graph(g: Graph, options: BuildOptions | None = None, /, **changes: Any) -> ArchModule:
    """Compile an already checked graph (see :func:`archcomp.build`) with ``options`` (default
    :class:`BuildOptions`), any keyword changing one of them:
    ``build_graph(g, device="meta", dtype="bfloat16")``.

    Before anything is allocated the build is refused if its peak memory (plus
    ``extra_bytes`` the caller will need beside it) exceeds the device's free memory or
    ``max_memory``, or its initializers exceed ``max_init_flops`` (None: no limit). With
    ``init=False`` the spec's initializers are skipped (the weights are about to be loaded).
    ``params_on_meta``: allocate only the modules that hold buffers; the parameters stay on
    meta for the caller to fill (how :mod:`archcomp.checkpoints` loads published weights).
    ``activation_checkpointing``: each repeated block runs under non-reentrant activation
    checkpointing (:func:`~archcomp.backends.torch.checkpointing.checkpoint_blocks`).
    ``command`` names the remedies a refusal suggests (see :func:`check_fits`)."""
    o = replace(options or BuildOptions(), **changes)
    seed, init, params_on_meta = o.seed, o.init, o.params_on_meta
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise UsageError(f"seed must be a non-negative int, found {seed!r}")
    dev = resolve_device(o.device)
    dt = resolve_dtype(o.dtype)
    est = estimate(g, dt, init=init)
    if params_on_meta:
        est = replace(est, params=0, param_bytes=0)
    if o.extra_bytes:
        est = replace(est, scratch_bytes=est.scratch_bytes + o.extra_bytes)
    budget = parse_bytes(o.max_memory) if o.max_memory is not None else None
    limit = None if o.max_init_flops is None else int(o.max_init_flops)
    check_fits(est, dev, budget, limit, command=o.command)
    if dev.type == "meta" or params_on_meta:  # nothing (or only buffers) to show
        model = compile_graph(g, dev, dt, seed, None, est, init=init, params_on_meta=params_on_meta)
    else:
        with showing(o.progress), task("allocating and initialising weights", est.total_bytes) as t:
            model = compile_graph(g, dev, dt, seed, lambda done, total: t(done), est, init=init)
    model.build_seed = seed
    if o.activation_checkpointing:
        checkpoint_blocks(model)
    return model


def unpickle(state: dict[str, Any]) -> ArchModule:
    """The model :meth:`ArchModule.__reduce__` pickled: its spec rebuilt (no initializer
    run) on its device and dtype, its state dict loaded strictly."""
    from archcomp.passes.pipeline import model_graph

    holder = type("Pickled", (), {"source": state["source"], "spec": state["spec"]})()
    g = model_graph(holder)
    if g is None:
        raise UsageError("a pickled archcomp model without its spec cannot be rebuilt")
    model = build_graph(
        g,
        device=state["device"],
        dtype=state["dtype"],
        seed=0,
        init=False,
        max_init_flops=None,
        activation_checkpointing=state["checkpointed"],
    )
    if state["device"] != "meta":
        model.load_state_dict(state["state_dict"], strict=True)
    model.build_seed = state["build_seed"]
    model.decoder_start_token_id = state.get("decoder_start_token_id")
    model.generation_rules = dict(state.get("generation_rules") or {})
    if state.get("return_dict"):  # absent from a model pickled before there was one
        from archcomp.backends.torch.outputs import return_outputs

        return_outputs(model)
    return model.train(state["training"])


UNPICKLE[:] = [unpickle]
