"""Studies over built models: accuracy (``compare``, ``precision_table``), error localisation,
latency (``benchmark``) and precision sweeps on Dask (``sweep``)."""
