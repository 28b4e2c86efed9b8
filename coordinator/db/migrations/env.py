"""Alembic environment: runs on the connection handed over by ``coordinator.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from coordinator.db.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic revision --autogenerate` from the command line
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///alembic-autogenerate.db"
    connection = create_engine(url).connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
