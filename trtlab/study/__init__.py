"""trtlab.study."""
