"""Passes over the IR. Each reads the graph, writes ``Node.outputs``/``meta``, reports errors."""
