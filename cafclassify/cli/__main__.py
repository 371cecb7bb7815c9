"""``python -m cafclassify.cli``: the same command line as ``cafclassify``."""

import sys

from . import main

sys.exit(main())
