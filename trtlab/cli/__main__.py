"""``python -m trtlab.cli``: the command-line interface."""

import sys

from trtlab.cli.main import main

sys.exit(main())
