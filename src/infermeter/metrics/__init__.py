"""Metrics computed from request records, after the run."""
