"""Evaluation: benchmarks, pass@k, reports."""
