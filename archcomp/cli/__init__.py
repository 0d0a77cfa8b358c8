"""The ``archcomp`` command line."""

from archcomp.cli.main import main

__all__ = ["main"]
