"""trtlab.cli."""
