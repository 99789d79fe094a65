"""The datasets: registry, splits, verified downloads, loading, the check
before a run, and the training batches."""
