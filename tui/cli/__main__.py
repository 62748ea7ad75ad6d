"""``python -m tui.cli``: same as the ``qpc`` console script."""

import sys

from tui.cli.main import main

sys.exit(main())
