import sys

from archcomp.cli import main

sys.exit(main())
