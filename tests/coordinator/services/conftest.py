"""Each service specification runs in one outer transaction, rolled back after the test.

SQLAlchemy 2's "Joining a Session into an External Transaction": one connection begins the
outer transaction; sessions bound to it with ``join_transaction_mode="create_savepoint"`` turn
their own begin / commit / rollback into savepoints, so a service that opens a transaction of
its own (``record_rejection``, the sweep) still leaves nothing behind. The schema is migrated
once per database (SQLite and PostgreSQL, see ``tests/databases.py``: on CI PostgreSQL must
run, elsewhere it is skipped when unreachable).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db.migrate import upgrade
from coordinator.db.session import make_engine
from coordinator.settings import Settings
from fedge.clock import ManualClock
from tests.coordinator.services.world import World, register_tiny_plan
from tests.databases import fresh_database


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated database of each kind, shared by every test of the session."""
    with fresh_database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        engine = make_engine(url)
        upgrade(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """One connection inside an outer transaction that is rolled back after the test."""
    with engine.connect() as connection:
        outer = connection.begin()
        try:
            yield connection
        finally:
            outer.rollback()


@pytest.fixture
def sessions(connection: Connection) -> sessionmaker[Session]:
    """Sessions joined to the outer transaction: their commits are savepoints released."""
    return sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@pytest.fixture
def world(sessions: sessionmaker[Session]) -> Iterator[World]:
    """A plan registered at the clock's start, and the session the test drives services with."""
    clock = ManualClock()
    settings = Settings(retry_min_seconds=5.0, retry_max_seconds=3600.0)
    with sessions() as session:
        plan = register_tiny_plan(session, now=clock.now())
        yield World(session=session, sessions=sessions, clock=clock, settings=settings, plan=plan)
