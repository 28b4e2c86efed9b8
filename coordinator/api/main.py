"""Entry point for uvicorn workers: ``uvicorn --factory coordinator.api.main:app_from_env``."""

from __future__ import annotations

from fastapi import FastAPI

from coordinator.api.app import create_app
from coordinator.settings import Settings


def app_from_env() -> FastAPI:
    """An app configured from ``FEDGE_*`` environment variables (one per worker process)."""
    return create_app(Settings())
