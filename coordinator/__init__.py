"""Coordinator: the FastAPI service that registers devices, leases tasks and aggregates updates."""
