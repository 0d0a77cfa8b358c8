"""Passes over the IR, one per file, and the pipeline that runs them.

In: the front end's unchecked Graph. Each pass reads the graph, fills ``Node.outputs`` or
``Node.meta`` and reports located errors: :mod:`~archcomp.passes.structure` (cycles, unused
nodes, topological order), :mod:`~archcomp.passes.shapes` (each op's shape rule),
:mod:`~archcomp.passes.ties` and :mod:`~archcomp.passes.inits`. Out, through
:func:`archcomp.passes.pipeline.load_graph`: a checked Graph that every backend starts from.
"""
