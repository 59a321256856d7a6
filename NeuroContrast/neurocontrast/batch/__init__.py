"""Cohorts: run a single-case command on every row of a manifest on a Dask cluster (``neurocontrast batch``)."""
