"""The compiled module: a ``torch.fx.GraphModule`` whose forward is straight-line generated code.

It carries the normalized spec (``.spec``), the spec texts and overrides it was built from
(``.source``, what an artifact stores), and per-node metadata (``.node_meta``: op, args,
output shapes, parameter shapes, submodule path). Submodules sit at the spec's qualified names
(``encoder.layers.0.attn.q_proj``); repeats are ``nn.ModuleList`` containers, and each block
instance is a :class:`CompiledBlock` its parent's forward calls.
"""

from __future__ import annotations

import copy
import keyword
import re
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import fx, nn
from torch.fx.graph import PythonCode

MAX_REPR_NODES = 60  # top-level nodes print(model) names; more are counted
REPR_WIDTH = 90


class _PendingForward:
    """``ArchModule.forward`` until its code is generated: reading it generates the code,
    which fx's recompile installs on the module's own class (shadowing this), and returns it."""

    def __get__(self, obj: ArchModule | None, objtype: type | None = None) -> Any:
        if obj is None:  # read on the module's own class (fx's symbolic_trace does)
            ref = objtype.__dict__.get("_archcomp_instance") if objtype is not None else None
            obj = ref() if ref is not None else None
            if obj is None:
                return self
            obj.make_code()
            return objtype.__dict__.get("forward", self)  # type: ignore[union-attr]
        obj.make_code()
        made = type(obj).forward
        if made is self:
            raise RuntimeError("the generated forward of this module is missing")
        return made.__get__(obj, type(obj))


class ArchModule(fx.GraphModule):
    """A model compiled from an archcomp spec. ``print(model.code)`` shows its forward."""

    spec: dict[str, Any]
    source: dict[str, Any] | None  # the spec texts and overrides it was built from
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    build_seed: int | None  # the seed it was built with (what shard() initialises from)
    # an encoder-decoder's first decoder token (config.json's, set by from_pretrained)
    decoder_start_token_id: int | None
    # generation_config.json's forced_decoder_ids, suppress_tokens, begin_suppress_tokens
    generation_rules: dict[str, Any]
    return_dict: bool  # whether forward returns a ModelOutput (from_pretrained's models do)

    forward = _PendingForward()  # the generated forward, made on first use (shadowed then)
    _archcomp_instance: ClassVar[weakref.ref[ArchModule] | None] = None  # its class's module

    def __init__(
        self, root: nn.Module | dict[str, Any], graph: fx.Graph, class_name: str = "ArchModule"
    ) -> None:
        self.__dict__["_in_init"] = True  # recompile() only marks the code pending
        try:
            if isinstance(root, nn.Module) and not isinstance(root, fx.GraphModule):
                # GraphModule would copy each called submodule under plain nn.Module parents
                # (a walk per node); take the root's children whole instead: the real
                # containers (ModuleList for repeats) in their order.
                super().__init__(root, fx.Graph(), class_name)
                self._modules.update(root.named_children())
                self._parameters.update(root._parameters)  # top-level nodes keyed by their id
                self._buffers.update(root._buffers)
                self._non_persistent_buffers_set |= root._non_persistent_buffers_set
                self.graph = graph
            else:
                super().__init__(root, graph, class_name)
        finally:
            del self.__dict__["_in_init"]
        type(self)._archcomp_instance = weakref.ref(self)  # fx makes a class per module
        self.spec = {}
        self.source = None
        self._node_meta: dict[str, dict[str, Any]] | None = {}
        self._node_meta_fn: Callable[[], dict[str, dict[str, Any]]] | None = None
        self.node_modules: dict[str, str] = {}  # node -> its module's path (node_meta's "module")
        self.input_names = ()
        self.output_names = ()
        self.build_seed = None
        self.decoder_start_token_id = None
        self.generation_rules = {}
        self.return_dict = False

    def recompile(self) -> PythonCode:
        """Generate the forward from ``graph`` now (fx's recompile). While the module is
        constructed it only marks the code pending: the source and its ``compile()`` are made
        when ``forward`` or ``code`` is first read (a call, ``torch.compile``, ``torch.export``,
        ``print(model.code)``), so a build that only summarizes or saves never pays for them."""
        if self.__dict__.get("_in_init"):
            self.__dict__["_code_pending"] = True
            return None  # type: ignore[return-value]  # GraphModule.__init__ ignores it
        code = super().recompile()
        self.__dict__["_code_pending"] = False
        return code

    def make_code(self) -> None:
        """Generate the pending forward (nothing if it is made already)."""
        if self.__dict__.get("_code_pending"):
            self.recompile()

    @property
    def code(self) -> str:
        """The generated forward's source."""
        self.make_code()
        return str(super().code)

    @property
    def node_meta(self) -> dict[str, dict[str, Any]]:
        """Per node: op, label, args, inputs, output shapes, parameter shapes, ties, module."""
        if self._node_meta is None:
            assert self._node_meta_fn is not None
            self._node_meta = self._node_meta_fn()
            self._node_meta_fn = None
        return self._node_meta

    def set_node_meta(self, fn: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self._node_meta, self._node_meta_fn = None, fn

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "model"))

    def __deepcopy__(self, memo: dict[int, Any]) -> ArchModule:
        res = super().__deepcopy__(memo)
        assert isinstance(res, ArchModule)
        # The parents GraphModule rebuilds are plain modules; the memo has our copies.
        res._modules.clear()
        res._modules.update(copy.deepcopy(self._modules, memo))
        res.spec = copy.deepcopy(self.spec, memo)
        res.source = copy.deepcopy(self.source, memo)
        res._node_meta = copy.deepcopy(self.node_meta, memo)
        res._node_meta_fn = None
        res.node_modules = dict(self.node_modules)
        res.input_names = self.input_names
        res.output_names = self.output_names
        res.build_seed = self.build_seed
        res.decoder_start_token_id = self.decoder_start_token_id
        res.generation_rules = copy.deepcopy(self.generation_rules, memo)
        res.return_dict = self.return_dict  # the graph copied holds its model_output call
        return res

    def extra_repr(self) -> str:
        """The spec's name and its top-level nodes in order, so that ``print(model)`` also
        shows the ops without a module (relu, pooling, flatten) between the modules."""
        nodes = [n for n in self.spec.get("nodes", []) if isinstance(n, dict) and "id" in n]
        if not nodes:
            return f"spec={self.name!r}"
        steps = [self._step(n) for n in nodes[:MAX_REPR_NODES]]
        if len(nodes) > MAX_REPR_NODES:
            steps.append(f"... {len(nodes) - MAX_REPR_NODES} more")
        lines = [steps[0]]
        for step in steps[1:]:  # wrapped between steps, never inside one
            if len(lines[-1]) + len(step) + 4 > REPR_WIDTH:
                lines[-1] += " ->"
                lines.append(step)
            else:
                lines[-1] += f" -> {step}"
        return f"spec={self.name!r}\nnodes: " + "\n       ".join(lines)

    def _step(self, node: dict[str, Any]) -> str:
        """``relu1 (relu)``; a repeat ``h_ (12x gpt_block)``."""
        op, nid = node.get("op", "?"), node["id"]
        if "repeat" in node:
            copies = getattr(self, str(nid), None)
            n = len(copies) if isinstance(copies, nn.ModuleList) else node["repeat"]
            return f"{nid} ({n}x {op})"
        return f"{nid} ({op})"

    def _repr_html_(self) -> str | None:
        """In a notebook: the interactive view (:func:`archcomp.view`); the text repr when it
        cannot be drawn."""
        from archcomp.base.display import html_view

        return html_view(self)

    # Generation (a decoder: token ids in, logits out); docs/generation.md.
    def new_cache(
        self, batch_size: int, max_length: int, *, dtype: Any = None, static: bool = False
    ) -> Any:
        """A :class:`~archcomp.nn.kv_cache.KVCache` for ``batch_size`` sequences of at most
        ``max_length`` tokens (``static``: fixed shapes, for torch.compile)."""
        from archcomp.backends.torch.generate import new_cache

        return new_cache(self, batch_size, max_length, dtype=dtype, static=static)

    def forward_cached(
        self,
        input_ids: torch.Tensor,
        cache: Any,
        attention_mask: torch.Tensor | None = None,
        *,
        last_only: bool = False,
        encoder_inputs: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) of ``input_ids`` (B, T) following the tokens ``cache`` holds
        (``last_only``: of the last position, (B, 1, V)); an encoder-decoder's decoder tokens,
        the first call with ``encoder_inputs`` (by input name), encoded once."""
        from archcomp.backends.torch.generate import forward_cached

        return forward_cached(
            self,
            input_ids,
            cache,
            attention_mask,
            last_only=last_only,
            encoder_inputs=encoder_inputs,
        )

    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Prompt and new tokens (B, T + n); keywords of
        :func:`archcomp.backends.torch.generate.generate` (do_sample, temperature, top_k,
        top_p, eos_token_id, pad_token_id, attention_mask, seed, callback, compile, cache;
        an encoder-decoder's encoder inputs by name, decoder_input_ids,
        decoder_attention_mask, decoder_start_token_id; forced_decoder_ids, suppress_tokens,
        begin_suppress_tokens, by default the model's generation_rules)."""
        from archcomp.backends.torch.generate import generate

        return generate(self, input_ids, max_new_tokens, **kwargs)

    def __str__(self) -> str:
        """The module tree, as any ``nn.Module`` prints (fx adds the generated forward and a
        debugging reminder; ``print(model.code)`` shows the forward)."""
        return nn.Module.__repr__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (``torch.save(model)``) as the spec texts it was built from and its state
        dict; unpickling (:func:`archcomp.backends.torch.build.unpickle`, registered in
        :data:`UNPICKLE`) recompiles the spec and loads the state. fx would pickle the
        generated code, and block classes, made per build, have no importable name."""
        first = next(iter(self.parameters()), None)
        state = {
            "source": self.source,
            "spec": self.spec,
            "state_dict": self.state_dict(),
            "device": str(first.device) if first is not None else "cpu",
            "dtype": str(first.dtype).removeprefix("torch.") if first is not None else None,
            "training": self.training,
            "build_seed": self.build_seed,
            "decoder_start_token_id": self.decoder_start_token_id,
            "generation_rules": self.generation_rules,
            "return_dict": self.return_dict,
            "checkpointed": any(
                getattr(type(m), "activation_checkpointing", False) for m in self.modules()
            ),
        }
        return (UNPICKLE[0], (state,))


# The function that rebuilds a pickled ArchModule: build.py's ``unpickle``, registered when
# build.py is imported (every ArchModule is made through it; module.py cannot import it back)
UNPICKLE: list[Callable[[dict[str, Any]], ArchModule]] = []


class CompiledBlock(nn.Module):
    """One block instance: a copy of a repeated block, or a block used once (see
    :mod:`archcomp.backends.torch.blocks`).

    Each distinct block structure is a subclass (``GptBlock``, ``Mlp``) whose ``forward`` is
    generated once, from ``graph``; every instance of that structure is an instance of it, and
    may hold instances of its sub-blocks. ``print(block.code)`` shows the forward.
    """

    graph: ClassVar[fx.Graph]
    code: ClassVar[str] = ""
    template_scope: ClassVar[str] = ""  # the copy whose lowering wrote ``graph``


def class_name(name: str, fallback: str) -> str:
    """A spec or block name as a Python class name: ``gpt_block`` -> ``GptBlock``."""
    camel = "".join(p[:1].upper() + p[1:] for p in re.split(r"[_\W]+", name) if p)
    if not camel.isidentifier():
        return fallback
    return camel + "_" if keyword.iskeyword(camel) else camel


def tied_names(model: nn.Module) -> dict[str, str]:
    """Alias state-dict key -> the first key holding the same tensor (tied weights)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for name, t in named:
        key = id(t)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases


def all_modules(root: nn.Module) -> list[nn.Module]:
    """``root.modules()``, in its order, by a loop: torch's walk resumes a generator per
    level for every module, quadratic in the nesting of blocks 16 deep."""
    out: list[nn.Module] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        out.append(m)
        stack.extend(reversed([c for c in m._modules.values() if c is not None]))
    return out


def all_tensors(root: nn.Module, table: str) -> list[torch.Tensor]:
    """``root.parameters()`` (``table="_parameters"``) or ``root.buffers()`` (``"_buffers"``):
    each tensor once, in torch's order."""
    out: list[torch.Tensor] = []
    seen: set[int] = set()
    for m in all_modules(root):
        for t in getattr(m, table).values():
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                out.append(t)
    return out


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Parameters counted once each (tied weights once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def get_path(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def set_param(root: nn.Module, path: str, value: torch.Tensor) -> None:
    """Set a parameter at a dotted path, replacing what was there."""
    owner_path, _, name = path.rpartition(".")
    owner = get_path(root, owner_path) if owner_path else root
    if isinstance(value, nn.Parameter):
        owner._parameters[name] = value
    else:
        owner._buffers[name] = value
