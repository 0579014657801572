"""Helpers that write tiny real checkpoints for tests, benchmarks and the CPU demo."""
