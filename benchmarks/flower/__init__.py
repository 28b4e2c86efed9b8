"""Flower's side of :mod:`benchmarks.vs_flower`, run in ``.venv-flower``."""
