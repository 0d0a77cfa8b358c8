"""Backends: a checked Graph in, something a user runs or reads out.

:mod:`archcomp.backends.torch` compiles it to a torch.fx ``nn.Module`` (and artifacts,
standalone source, summaries); :mod:`archcomp.backends.graphviz` draws it. The two are peers:
neither imports the other.
"""
