"""The op library as a whole (archcomp/ops/registry.py and archcomp/ops/__init__.py): what
holds for every op.
"""

from __future__ import annotations

import subprocess
import sys

from lowering import MHA_SELF, macs, posenc_spec, rnn_spec, spec

from archcomp import load_graph
from archcomp.ir.dims import Sym, mul
from archcomp.ops import get_op

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
