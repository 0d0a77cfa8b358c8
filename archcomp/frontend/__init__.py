"""The front end: spec text -> an unchecked :class:`~archcomp.ir.Graph`.

In: a path, a YAML string or a mapping, and param overrides. Steps, one module each:
:mod:`~archcomp.frontend.source` (bytes -> located plain values, YAML 1.2 core schema, nothing
constructed from tags), :mod:`~archcomp.frontend.schema` (pydantic models of the spec format),
:mod:`~archcomp.frontend.validate` (a document -> a ``Spec``, pydantic errors located),
:mod:`~archcomp.frontend.files` (which files a spec may read, each read once),
:mod:`~archcomp.frontend.loader` (imports -> a ``Program`` of spec and blocks),
:mod:`~archcomp.frontend.params` with :mod:`~archcomp.frontend.expr` (``${...}`` evaluated
over the params, without ``eval``), :mod:`~archcomp.frontend.expand` (block calls and
``repeat`` -> op nodes) and :mod:`~archcomp.frontend.build` (typed inputs, bound references:
the Graph). Out: the Graph, for :mod:`archcomp.passes` to check.
"""
