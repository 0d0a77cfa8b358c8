"""The ``archcomp`` command: arguments in, the API and backends run, text and files out.

:mod:`~.main` parses and dispatches and maps each failure to an exit code; :mod:`~.common`
holds what subcommands share (registration, ``-p`` and ``--depth``); every other module is
one subcommand, named after it.
"""

from archcomp.cli.main import main

__all__ = ["main"]
