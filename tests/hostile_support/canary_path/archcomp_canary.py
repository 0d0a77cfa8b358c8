"""A module no archcomp run may ever import: hostile specs name it as their payload.

Importing it (or calling ``fire``) writes ``FIRED`` into ``$ARCHCOMP_CANARY_DIR``, so even a
path that the audit hook missed leaves evidence behind.
"""

import os
from pathlib import Path


def fire(*_args: object, **_kwargs: object) -> None:
    folder = os.environ.get("ARCHCOMP_CANARY_DIR")
    if folder:
        Path(folder, "FIRED").write_text("archcomp_canary was imported or called\n")


fire()
