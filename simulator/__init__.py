"""Simulator: population model, virtual clock, data partitioning and reports."""
