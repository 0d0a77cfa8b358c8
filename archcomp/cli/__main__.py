"""``python -m archcomp.cli``: the same command line as ``archcomp``."""

import sys

from archcomp.cli.main import main

sys.exit(main())
