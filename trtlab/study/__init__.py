"""Studies over models and configurations: precision sweeps on Dask and their task metrics."""
