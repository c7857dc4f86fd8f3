"""trtlab.partitioning."""
