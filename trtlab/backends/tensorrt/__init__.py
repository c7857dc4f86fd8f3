"""trtlab.backends.tensorrt."""
