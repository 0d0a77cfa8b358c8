"""The ground floor, which every layer may use and which imports nothing else of archcomp.

In: nothing of archcomp. Out: :mod:`~archcomp.base.errors` (``Diagnostic`` located at
file:line:col, ``SpecError`` carrying every diagnostic, ``UsageError``, the ``Reporter`` that
collects them, "did you mean"), :mod:`~archcomp.base.documents` (``SourceDoc``: a spec's
lines and the position of every key and value), :mod:`~archcomp.base.fileio` (all-or-nothing
file writes) and :mod:`~archcomp.base.version`.
"""
