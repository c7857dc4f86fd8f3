"""trtlab.backends."""
