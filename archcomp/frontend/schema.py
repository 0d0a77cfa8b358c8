"""The spec format as pydantic models (its JSON Schema is ``archcomp schema``).

Values that may be written as expressions (``${...}``) are typed ``X | Expr`` here and
evaluated later, against params. Op arguments are the extra keys of a node; each op's own
model (in :mod:`archcomp.ops`) validates them.
"""

from __future__ import annotations

import keyword
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

FORMAT_VERSION = 1

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
ImportPath = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Expr = Annotated[str, StringConstraints(pattern=r"^\s*\$\{[\s\S]*\}\s*$")]
RefText = Annotated[
    str,
    StringConstraints(
        pattern=r"^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)(\.[A-Za-z_][A-Za-z0-9_]*)?$", max_length=130
    ),
]
# A node id: an identifier, or a number (an nn.Sequential's children, ``0``, ``1``, ...)
NodeId = Annotated[
    str, StringConstraints(pattern=r"^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)$", max_length=64)
]
# A tie's target: ``node.param``, or a parameter inside a block call
# (``model.embed_tokens.weight``); a node may be a number (``0.weight``, a Sequential's child)
TiePath = Annotated[
    str,
    StringConstraints(
        pattern=r"^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+)){0,8}$",
        max_length=300,
    ),
]
Scalar = Union[bool, int, float, str]
DType = Literal["float32", "float16", "bfloat16", "float64", "int64", "int32", "bool"]
ParamType = Literal["int", "float", "bool", "str", "list"]


# Names a spec may not use for ids, params or inputs: Python keywords, the expression language's
# own names, and nn.Module attributes (a submodule called 'forward' or 'to' would shadow them).
MODULE_ATTRIBUTES = frozenset(
    [
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
        "code",
        "graph",
        "meta",
        "spec",
        # torch.fx.GraphModule, which the compiled module is
        "add_submodule",
        "delete_all_unused_submodules",
        "delete_submodule",
        "name",
        "print_readable",
        "recompile",
        "to_folder",
    ]
)
# archcomp's ArchModule (backends/torch/module.py), which the compiled module and each block's
# module are, adds these: a node 'source' is refused by torch as a child module, and a node
# 'generate' would leave the forward calling the method. Node ids only (inputs and params are
# no attributes).
ARCH_MODULE_ATTRIBUTES = frozenset(
    [
        "build_seed",
        "decoder_start_token_id",
        "forward_cached",
        "generate",
        "generation_rules",
        "input_names",
        "make_code",
        "new_cache",
        "node_meta",
        "node_modules",
        "output_names",
        "return_dict",
        "set_node_meta",
        "shape_env",
        "source",
        "template_scope",
    ]
)
EXPRESSION_NAMES = frozenset(
    {
        "int",
        "float",
        "round",
        "min",
        "max",
        "abs",
        "true",
        "false",
        "True",
        "False",
        "None",
        "null",
        "index",
    }
)
# 'self' is the forward's first argument, so no input (or param) may take it; a node id may
# (reserved_id): ids are attribute paths, and the code generator names no local 'self'.
RESERVED = frozenset(keyword.kwlist) | MODULE_ATTRIBUTES | EXPRESSION_NAMES | {"self"}
# Globals the generated forward may use (torch.fx's own and the builtins it emits): inputs are
# the forward's parameters, so an input of one of these names would shadow it in the body.
FORWARD_GLOBALS = frozenset(
    {
        "torch",
        "device",
        "inf",
        "nan",
        "NoneType",
        "pytree",
        "fx_pytree",
        "getattr",
        "slice",
        "Ellipsis",
        "operator",
        "math",
        "builtins",
    }
)


def reserved_id(name: str) -> bool:
    """Node ids become submodule attributes: names starting with '_' are nn.Module internals
    (``_modules``, ``_parameters``, ``__class__``, ...) and are reserved as well. ``self`` is
    not: an attribute may be called so (transformers' ``attention.self``), and the code
    generator names no local after it (archcomp.backends.torch.codegen)."""
    reserved = name in RESERVED or name in ARCH_MODULE_ATTRIBUTES
    return (reserved and name != "self") or name.startswith("_")


class _Strict(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", allow_inf_nan=False, populate_by_name=True
    )


class ParamDecl(_Strict):
    """Long form of a param: ``d_model: {default: 512, doc: "model width"}``."""

    default: Scalar | list[Any] | None = None
    type: ParamType | None = None
    doc: str | None = None
    min: int | float | None = None
    max: int | float | None = None
    choices: list[Scalar] | None = None


ParamValue = Union[ParamDecl, bool, int, float, str, list[Any]]


Size = Annotated[int, Field(gt=0, le=2**63 - 1)]


class DimDecl(_Strict):
    """Long form of a symbolic dim: ``T: {size: 64, min: 2}``. ``size`` is the example size
    of summaries; ``min`` the least size the model takes, which shape rules may rely on
    (``x[:, :2]`` of ``[B, T]`` is ``[B, 2]``)."""

    size: Size | None = None
    min: Size = 1


class InputDecl(_Strict):
    """A model input: ``src: {shape: [B, S], dtype: int64}`` (short form: just the shape);
    ``when: ${expr}`` false makes it absent: no argument of the forward, read by no present
    node."""

    shape: list[int | str] = Field(max_length=16)
    dtype: DType = "float32"
    doc: str | None = None
    when: bool | Expr | None = None


InputValue = Union[InputDecl, list[int | str]]
InRef = Union[RefText, list[RefText], dict[Identifier, Union[RefText, list[RefText]]]]


class TieSpec(BaseModel):
    """``tie: {weight: wte.weight}``: parameter -> ``node.param`` it reuses; an optional
    ``when: ${expr}`` says whether the ties hold (when false the node has its own parameters)."""

    model_config = ConfigDict(strict=True, extra="allow")

    when: bool | Expr | None = None
    __pydantic_extra__: dict[str, TiePath] = Field(init=False)

    @property
    def targets(self) -> dict[str, str]:
        """Parameter -> ``node.param`` (or ``node``: the same parameter name)."""
        return dict(self.model_extra or {})


class NodeSpec(BaseModel):
    """A node: ``{id: fc1, op: linear, in: x, out_features: 5}``; other keys are op arguments."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)

    id: NodeId
    op: Annotated[str, StringConstraints(max_length=64)]
    in_: InRef | None = Field(default=None, alias="in")
    label: str | None = Field(default=None, max_length=200)
    when: bool | Expr | None = None
    repeat: int | Expr | None = None
    shared: bool | Expr = False
    tie: TieSpec | None = None
    init: dict[Identifier, Union[str, dict[str, Any]]] | str | None = Field(
        default=None,
        description="the node's initializers: one for every parameter (init: zeros) or one per "
        "parameter (init: {weight: {normal: {std: 0.02}}}); an op's own arguments have other names",
    )
    doc: str | None = None

    @property
    def op_args(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


OutputsValue = Union[
    RefText,
    Annotated[list[RefText], Field(min_length=1)],
    Annotated[dict[Identifier, RefText], Field(min_length=1)],
]


class BlockFigureDecl(_Strict):
    """How ``archcomp draw`` draws a block: ``figure: {open: true}`` draws it open by default
    (Mamba's mixer, as its paper's Figure 3), where a block of only ops would be one box."""

    open: bool = Field(default=False, description="drawn open without --expand")


class BlockSpec(_Strict):
    """A reusable sub-graph, used as a node whose ``op`` is the block's name."""

    label: str | None = Field(default=None, max_length=200)
    doc: str | None = None
    params: dict[Identifier, ParamValue] = {}
    inputs: list[Identifier] = Field(min_length=1, max_length=32)
    nodes: list[NodeSpec] = Field(min_length=1)
    outputs: OutputsValue
    figure: BlockFigureDecl | None = None


class ImportSpec(_Strict):
    """``{path: blocks/attention.yaml, blocks: [multi_head]}`` (a file, relative to the spec) or
    ``{library: gpt, blocks: [gpt_block]}`` (a block library shipped with archcomp); exactly
    one of ``path`` and ``library``. A bare string is a path and imports all its blocks."""

    model_config = ConfigDict(  # merged with _Strict's
        json_schema_extra={"oneOf": [{"required": ["path"]}, {"required": ["library"]}]}
    )

    path: ImportPath | SkipJsonSchema[None] = None
    library: Identifier | SkipJsonSchema[None] = Field(
        default=None,
        description="name of a block library shipped with archcomp (archcomp specs lists them)",
    )
    blocks: list[Identifier] | None = None


class FigureDecl(_Strict):
    """How ``archcomp draw`` ends the figure, not what the model computes:
    ``figure: {outputs: {logits: probabilities}}`` draws the output ``logits`` as the
    Transformer paper does, through a Softmax box into "Output Probabilities" (the model
    still returns the logits)."""

    outputs: dict[Identifier, Literal["probabilities"]] = Field(
        default={},
        description="output name -> how the figure draws it after the output "
        "(probabilities: Softmax, Output Probabilities)",
    )


class Spec(_Strict):
    """A spec file: a model (``inputs``, ``nodes``, ``outputs``) and/or a library of blocks."""

    archcomp: Literal[1] = Field(description="format version of the spec")
    name: Identifier | None = None
    description: str | None = None
    params: dict[Identifier, ParamValue] = {}
    dims: dict[Identifier, Union[Size, DimDecl]] = Field(
        default={},
        description="example sizes of symbolic dims, for summaries and MACs "
        "(T: 64), and their least values (T: {size: 64, min: 2})",
    )
    imports: list[Union[ImportSpec, ImportPath]] = []
    inputs: dict[Identifier, InputValue] = {}
    blocks: dict[Identifier, BlockSpec] = {}
    nodes: list[NodeSpec] = []
    outputs: OutputsValue | None = None
    figure: FigureDecl | None = None

    def __repr__(self) -> str:  # pydantic's would print every node's every field
        ins = ", ".join(self.inputs)
        return (
            f"Spec({self.name!r}: {len(self.nodes)} nodes, {len(self.blocks)} blocks; "
            f"inputs {ins or '-'}; params {', '.join(self.params) or '-'})"
        )

    __str__ = __repr__


def json_schema(op_models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """JSON Schema of the format, with each op's arguments completed by editors."""
    schema = Spec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "archcomp spec"
    defs = schema.setdefault("$defs", {})
    node = defs["NodeSpec"]
    variants = []
    for name, model in sorted(op_models.items()):
        args = model.model_json_schema(by_alias=True)
        for sub_name, sub in args.pop("$defs", {}).items():  # nested arguments (rope: {...})
            sub = dict(sub)
            sub["properties"] = {k: _or_expr(p) for k, p in sub.get("properties", {}).items()}
            defs.setdefault(sub_name, sub)
        props = dict(node["properties"])
        props["op"] = {"const": name}
        for key, prop in args.get("properties", {}).items():
            props[key] = _or_expr(prop)
        variants.append(
            {
                "type": "object",
                "title": f"op {name}",
                "properties": props,
                "required": sorted(set(node.get("required", [])) | set(args.get("required", []))),
                "additionalProperties": False,
                "description": model.__doc__ or name,
            }
        )
    generic = dict(node)
    generic["title"] = "block call"
    generic["properties"] = dict(node["properties"])
    generic["properties"]["op"] = {"type": "string", "not": {"enum": sorted(op_models)}}
    defs["NodeSpec"] = {"anyOf": [*variants, generic]}
    return schema


_EXPR = {"type": "string", "pattern": r"^\s*\$\{.*\}\s*$"}


def _or_expr(prop: Any) -> Any:
    """An argument's schema, or a ``${...}`` expression in its place or in any list item."""
    return {"anyOf": [_items_or_expr(prop), _EXPR]}


def _items_or_expr(prop: Any) -> Any:
    if isinstance(prop, list):
        return [_items_or_expr(p) for p in prop]
    if not isinstance(prop, dict):
        return prop
    out = {k: _items_or_expr(v) for k, v in prop.items()}
    if isinstance(prop.get("items"), dict):
        out["items"] = {"anyOf": [out["items"], _EXPR]}
    return out
