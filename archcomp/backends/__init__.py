"""Backends: read the checked IR and produce a torch module (torch) or a diagram (graphviz)."""
