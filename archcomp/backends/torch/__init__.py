"""The torch backend: checked Graph -> ``nn.Module`` and what is made from one.

:mod:`~.build` (device, dtype, memory budget, then :mod:`~.codegen`: straight-line torch.fx
forwards, :mod:`~.blocks` for block instances as classes, :mod:`~.readable` for their text),
:mod:`~.init` (seeded weights), :mod:`~.artifact` (safetensors with the spec embedded, verified
on load), :mod:`~.emit` (standalone Python source), :mod:`~.summary` (the per-node table),
:mod:`~.devices`.
"""

from archcomp.base.gcpause import importing

with importing():  # the command line's start-up: see archcomp.base.gcpause
    import torch  # noqa: F401
