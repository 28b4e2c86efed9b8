"""Throw-away databases for tests: a SQLite file, or a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

POSTGRES_ADMIN = os.environ.get(
    "FEDGE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def postgres_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(_libpq(POSTGRES_ADMIN), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def require_postgres() -> None:
    """Skip without PostgreSQL on a user's machine; fail on CI, where it must run."""
    if postgres_available():
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but PostgreSQL is unreachable at {POSTGRES_ADMIN}")
    pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN} (set FEDGE_TEST_POSTGRES)")


@contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A SQLAlchemy URL of an empty database of ``kind`` ("sqlite" or "postgres")."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'fedge.db'}"
        return
    require_postgres()
    import psycopg

    name = f"fedge_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(POSTGRES_ADMIN), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(_libpq(POSTGRES_ADMIN), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")
