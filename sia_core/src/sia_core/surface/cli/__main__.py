"""``python -m sia_core.surface.cli``: the ``sia`` command."""

import sys

from sia_core.surface.cli import main

sys.exit(main())
