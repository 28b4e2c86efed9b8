"""Fedge's benchmarks, each a module run from the repository root: ``python -m benchmarks.NAME``.

What they share (the checkout's CLI, a served coordinator, memory, timing, the figures table,
the JSON summary) is :mod:`benchmarks.harness`; figures are recorded in ``benchmarks/RESULTS.md``.
Nothing is imported here: the Flower and TFF sides run in virtualenvs of their own.
"""
