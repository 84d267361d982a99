"""Evaluation: suites of checks over a dataset version, run against model versions, compared and gated."""
