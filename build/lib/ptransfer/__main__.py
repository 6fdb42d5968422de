"""``python -m ptransfer``: the same command as the ``ptransfer`` console script."""

import sys

from ptransfer.cli import main

sys.exit(main())
