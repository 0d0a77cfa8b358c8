"""The op library as a whole (archcomp/ops/registry.py and archcomp/ops/__init__.py): what
holds for every op.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lowering import MHA_SELF, macs, posenc_spec, rnn_spec, spec
from pydantic import AliasChoices, Field

from archcomp import load_graph
from archcomp.frontend.schema import NodeSpec
from archcomp.ir.dims import Sym, mul
from archcomp.ir.opdef import RESERVED_ARG_NAMES, arg_names
from archcomp.ops import get_op
from archcomp.ops.registry import OpArgs, OpDef, Style, all_ops, register

B, H, W = (Sym.symbol(n) for n in "BHW")


def test_lowerings_import_no_torch_at_declaration() -> None:
    """Every op module imports torch only inside lowering functions (``check`` needs no torch)."""
    import ast
    from pathlib import Path

    import archcomp.ops as ops_pkg

    files = sorted(Path(ops_pkg.__file__).parent.glob("*.py"))
    assert len(files) > 10
    for path in files:
        for stmt in ast.parse(path.read_text()).body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                mods = (
                    [a.name for a in stmt.names]
                    if isinstance(stmt, ast.Import)
                    else [stmt.module or ""]
                )
                assert not any(m == "torch" or m.startswith("torch.") for m in mods), (path, mods)


def test_macs_are_symbolic_per_forward() -> None:
    g = load_graph(
        spec(
            "x: [B, 3, H, W]",
            """
            - {id: n, op: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
            - {id: bn, op: batch_norm}
            """,
            "{y: bn}",
        )
    )
    assert macs(g, "n") == mul(mul(mul(B, H), W), 4 * 3 * 9)
    assert macs(g, "bn") == mul(mul(mul(B, H), W), 4)
    assert get_op("max_pool2d").macs is None  # type: ignore[union-attr]


def test_check_does_not_import_torch() -> None:
    code = (
        "import sys, archcomp\n"
        f"archcomp.load_graph({MHA_SELF!r})\n"
        f"archcomp.load_graph({rnn_spec('lstm', 'hidden_size: 8')!r})\n"
        f"archcomp.load_graph({posenc_spec('learned_positional_encoding', ', max_len: 9')!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- every op is tested in its family's file ------------------------------------------------

TESTS = Path(__file__).resolve().parent


def family_of(op: OpDef) -> str:
    """The module of archcomp/ops that declares the op: the one its rules and arguments come
    from (archcomp/ops/common.py and archcomp/ir/opdef.py hold rules shared by families)."""
    homes = {
        f.__module__.removeprefix("archcomp.ops.")
        for f in (op.args, op.shape, op.lower)
        if f is not None and f.__module__.startswith("archcomp.ops.")
    } - {"common"}
    assert len(homes) == 1, f"op {op.name!r}: its rules come from {sorted(homes)}"
    return homes.pop()


def built_ops(source: str) -> set[str]:
    """Op names a test file builds: ``op: name`` inside a string of its code (a spec text or a
    node), not in a comment or a docstring."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    found: set[str] = set()
    for node in ast.walk(tree):  # parametrize("op", [...]) feeds op names to a spec builder
        for dec in getattr(node, "decorator_list", []):
            if _parametrizes_op(dec):
                found |= {c.value for c in ast.walk(dec.args[1]) if isinstance(c, ast.Constant)}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            found |= set(re.findall(r"\bop: *([a-z_][a-z0-9_]*)", node.value))
    return found


def _parametrizes_op(dec: ast.expr) -> bool:
    return (
        isinstance(dec, ast.Call)
        and isinstance(dec.func, ast.Attribute)
        and dec.func.attr == "parametrize"
        and len(dec.args) == 2
        and isinstance(dec.args[0], ast.Constant)
        and "op" in str(dec.args[0].value).replace(" ", "").split(",")
    )


def test_every_op_is_built_in_its_family_test_file() -> None:
    missing: dict[str, list[str]] = {}
    families: dict[str, list[str]] = {}
    for name, op in all_ops().items():
        families.setdefault(family_of(op), []).append(name)
    for family, names in sorted(families.items()):
        path = TESTS / f"test_{family}.py"
        built = built_ops(path.read_text()) if path.exists() else set()
        missing.update({f"tests/ops/test_{family}.py": [n for n in names if n not in built]})
    assert {k: v for k, v in missing.items() if v} == {}, (
        "each op is built (`op: <name>` in a spec string) by a test of its family's file"
    )


def test_the_coverage_check_sees_specs_not_comments_or_docstrings() -> None:
    source = '''
"""op: a"""
# op: b
def test_x():
    """op: c"""
    load_graph(spec("x: [2]", "- {id: n, op: d, dim: 1}"))
@pytest.mark.parametrize("op", ["e", "f"])
@pytest.mark.parametrize("dtype", ["g"])
def test_y(op, dtype):
    load_graph(spec("x: [2]", f"- {{id: n, op: {op}}}"))
'''
    assert built_ops(source) == {"d", "e", "f"}
    op = get_op("linear")
    assert op is not None and family_of(op) == "dense"


# -- op arguments may not be named like node keys --------------------------------------------


def test_reserved_argument_names_are_the_node_keys_of_the_spec_schema() -> None:
    keys = set(NodeSpec.model_fields) | {
        f.alias for f in NodeSpec.model_fields.values() if f.alias is not None
    }
    assert keys == RESERVED_ARG_NAMES
    assert {"init", "in", "in_", "label"} <= RESERVED_ARG_NAMES


class _InitArgs(OpArgs):
    init: float = 1.0


class _AliasedArgs(OpArgs):
    source: str = Field(default="x", alias="in")


class _ChoiceArgs(OpArgs):
    note: str = Field(default="", validation_alias=AliasChoices("note", "doc"))


@pytest.mark.parametrize(
    ("args", "name"), [(_InitArgs, "init"), (_AliasedArgs, "in"), (_ChoiceArgs, "doc")]
)
def test_register_refuses_an_argument_named_like_a_node_key(args: type[OpArgs], name: str) -> None:
    op = OpDef("reserved_probe", args, lambda ctx: ctx.x, Style("arith", "Probe"))
    with pytest.raises(ValueError, match=f"argument '{name}' is a node key") as info:
        register(op)
    assert f"name it {name}_value" in str(info.value)
    assert get_op("reserved_probe") is None


def test_no_registered_op_has_a_reserved_argument_name() -> None:
    """What register() enforces holds for the library (and arg_names reads field names)."""
    for name, op in all_ops().items():
        assert not arg_names(op.args) & RESERVED_ARG_NAMES, name
    assert "out_features" in arg_names(all_ops()["linear"].args)
