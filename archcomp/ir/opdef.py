"""What an op is: its argument model, ports, drawing style, and the rules that give its shapes,
parameters, MACs and torch lowering. The IR's nodes hold an :class:`OpDef`; the op library
(:mod:`archcomp.ops`) declares one per op in its registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict

from archcomp.ir.dims import Dim, Shape, fmt_shape
from archcomp.ir.drawing import Style
from archcomp.ir.tensors import TensorType

# The keys a spec node has besides its op's arguments (the front end's NodeSpec reads them;
# ``in_`` is ``in``'s Python name). An op argument of one of these names would be bound to the
# node instead: register() refuses it.
NODE_KEYS = ("id", "op", "in", "label", "when", "repeat", "shared", "tie", "init", "doc")
RESERVED_ARG_NAMES = frozenset((*NODE_KEYS, "in_"))


class OpArgs(BaseModel):
    """Base of every op's argument model: strict types, no unknown keys, finite floats.
    Each model's validator is built when it first validates (``defer_build``), not when the op
    library is imported: a spec uses a few of the library's ops."""

    model_config = ConfigDict(
        strict=True, extra="forbid", allow_inf_nan=False, frozen=True, defer_build=True
    )


def arg_names(args: type[BaseModel]) -> set[str]:
    """Every name a spec may write for one of the model's fields: field names and aliases."""
    names: set[str] = set()
    for name, f in args.model_fields.items():
        names.add(name)
        for alias in (f.alias, f.validation_alias):
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            for c in choices:
                first = c.path[0] if isinstance(c, AliasPath) else c
                if isinstance(first, str):
                    names.add(first)
    return names


class NoArgs(OpArgs):
    """This op takes no arguments."""


@dataclass(frozen=True)
class Port:
    """An input role of an op. ``default`` names the role it copies when omitted."""

    name: str
    optional: bool = False
    variadic: bool = False
    default: str | None = None


class ShapeError(Exception):
    """A shape rule's complaint. ``arg`` or ``port`` say what to point at."""

    def __init__(
        self,
        message: str,
        *,
        arg: str | None = None,
        port: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.port = port
        self.hint = hint


@dataclass
class ShapeCtx:
    """What a shape rule sees: the args and input types of one node."""

    args: Any
    inputs: Mapping[str, TensorType | list[TensorType] | None]
    inferred: dict[str, Any] = field(default_factory=dict)
    mins: Mapping[str, int] = field(default_factory=dict)  # symbols' declared least values

    @property
    def x(self) -> TensorType:
        """The single (first) input."""
        first = next(iter(self.inputs.values()))
        assert isinstance(first, TensorType)
        return first

    def get(self, port: str) -> TensorType | None:
        value = self.inputs.get(port)
        assert value is None or isinstance(value, TensorType)
        return value

    def many(self, port: str) -> list[TensorType]:
        value = self.inputs.get(port)
        return value if isinstance(value, list) else ([value] if value is not None else [])

    def infer(self, arg: str, value: Any) -> Any:
        """Record an inferred argument; an explicit one must agree."""
        given = getattr(self.args, arg, None)
        if given is not None and given != value:
            raise ShapeError(
                f"{arg} is {given} but the input gives {value}",
                arg=arg,
                hint=f"drop {arg}; it is inferred from the input",
            )
        self.inferred[arg] = value
        return value

    def concrete(self, d: Dim, what: str, port: str | None = None) -> int:
        if not isinstance(d, int):
            raise ShapeError(
                f"{what} must be a concrete size, found symbolic '{d}'",
                port=port,
                hint="give the input a concrete size for this dimension",
            )
        return d

    def need_rank(self, t: TensorType, ranks: tuple[int, ...], port: str, what: str) -> None:
        if t.rank not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ShapeError(
                f"{what} expects a rank-{want} input, found {fmt_shape(t.shape)}", port=port
            )


class LowerCtx(Protocol):
    """What a torch lowering sees while the compiler builds the forward graph (torch.fx).

    ``inputs`` holds fx nodes by port (a list for variadic ports). A lowering returns an fx
    node for its one result, or a dict result name -> fx node.
    """

    args: Any  # resolved op args (inferred sizes filled in)
    inputs: Mapping[str, Any]
    in_types: Mapping[str, Any]  # port -> TensorType (or list)
    out_types: Mapping[str, TensorType]
    factory: dict[str, Any]  # {"device": ..., "dtype": ...} for parameters and buffers

    @property
    def x(self) -> Any:
        """The first input's fx node."""

    def module(self, m: Any) -> Callable[..., Any]:
        """Register ``m`` as this node's submodule; calling the result emits call_module."""

    def tensor(self, t: Any, persistent: bool = True) -> Any:
        """Register the Parameter ``t`` (or, a plain tensor, the buffer ``t``, in the state dict
        when ``persistent``) at this node's qualified name itself (its state_dict key is the node
        id, held by the node's parent) and emit get_attr of it."""

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Emit a call_function node."""

    def method(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Emit a call_method node (``args[0]`` is the tensor)."""


Lowering = Callable[[LowerCtx], Any]
ShapeResult = Union[TensorType, dict[str, TensorType]]
ShapeRule = Callable[[ShapeCtx], ShapeResult]
ParamRule = Callable[[Any], dict[str, Shape]]
MacRule = Callable[[Any, Mapping[str, Any], dict[str, TensorType]], Dim]
ScratchRule = Callable[[Any, int], int]  # (args, bytes per element) -> bytes
# (args, input types by port, output types by result) -> elements, in the build dtype, that
# autograd keeps for backward in one training forward
ActivationRule = Callable[[Any, Mapping[str, Any], dict[str, TensorType]], Dim]


@dataclass(frozen=True)
class OpDef:
    """Everything about one op, in one place."""

    name: str
    args: type[OpArgs]
    shape: ShapeRule
    style: Style
    inputs: tuple[Port, ...] = (Port("x"),)
    results: tuple[str, ...] = ("out",)
    params: ParamRule | None = None
    buffers: ParamRule | None = None
    macs: MacRule | None = None
    lower: Lowering | None = None  # torch lowering (imports torch lazily)
    doc: str = ""
    # bytes the module's construction allocates beyond its parameters and buffers, at most
    # (temporaries); the build's memory estimate covers this peak
    scratch: ScratchRule | None = None
    # the activations the summary counts for this op where its lowering cannot run on meta
    # tensors (data-dependent: .item(), nonzero); without it, its output's size, marked "?"
    activations: ActivationRule | None = None
    # a few words the summary shows after the op's name, from its args ("2 of 8 experts")
    note: Callable[[Any], str] | None = None

    def param_shapes(self, args: Any) -> dict[str, Shape]:
        return self.params(args) if self.params else {}

    def buffer_shapes(self, args: Any) -> dict[str, Shape]:
        return self.buffers(args) if self.buffers else {}

    def scratch_bytes(self, args: Any, itemsize: int) -> int:
        return self.scratch(args, itemsize) if self.scratch else 0
