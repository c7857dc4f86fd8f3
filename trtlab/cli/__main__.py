"""``python -m trtlab.cli``: the command-line interface."""

from trtlab.cli.main import run

run()
