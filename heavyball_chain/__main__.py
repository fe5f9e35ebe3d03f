"""``python -m heavyball_chain``: the ``heavyball-chain`` command line."""

import sys

from .bench.cli import main

sys.exit(main())
