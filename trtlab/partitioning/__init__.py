"""Partitioning, the BYOC heart: annotate, merge, prune, order and cut (``trtlab.partition``)."""
