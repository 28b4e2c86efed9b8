"""Engine and session factory; one place owns each transaction (``with session.begin()``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys switched on."""
    if url.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": 30.0}
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Take the write lock at BEGIN, so two writers queue instead of one failing later
            # with "database is locked" on upgrade from a read lock.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(connection: Any) -> None:
            # A read-only transaction (see `transaction`) takes no lock up front, so reads
            # never queue behind writers (WAL gives them a snapshot).
            read_only = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


READ_ONLY = "fedge_read_only"


@contextmanager
def transaction(factory: sessionmaker[Session], *, read_only: bool = False) -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on any error.

    ``read_only=True`` promises no writes: on SQLite the transaction then starts deferred
    instead of taking the write lock (a write inside it may fail with "database is locked").
    """
    with factory() as session, session.begin():
        if read_only and isinstance(session.get_bind(), Engine):  # a bound connection keeps its own
            session.connection(execution_options={READ_ONLY: True})
        yield session


def writes_serialised(session: Session) -> bool:
    """Whether ``session``'s write transaction held the database's write lock from its start.

    SQLite's writers begin ``IMMEDIATE`` (see :func:`make_engine`): nothing another transaction
    commits can change what this one has read, so a re-read "under the lock" reads the same.
    """
    return session.get_bind().dialect.name == "sqlite"
