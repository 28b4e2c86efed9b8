"""The blob store: identical bytes stored by two transactions at once make one row, no error."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from coordinator.db.blobs import get_blob, put_blob
from coordinator.db.migrate import upgrade
from coordinator.db.session import make_engine
from tests.databases import fresh_database

DATA = b"the same update bytes, uploaded twice at once"


@pytest.mark.postgres
def test_identical_bytes_stored_by_two_transactions_at_once_make_one_blob(tmp_path):
    with fresh_database("postgres", tmp_path) as url:
        engine = make_engine(url)
        upgrade(engine)
        first = Session(engine)
        first.begin()
        digest = put_blob(first, DATA, now=1.0)  # inserted, not yet committed
        outcome: dict[str, object] = {}

        def second_transaction() -> None:
            try:
                with Session(engine) as session, session.begin():
                    outcome["digest"] = put_blob(session, DATA, now=2.0)
            except Exception as exc:  # the defect: a duplicate-key error, a 500 upstream
                outcome["error"] = exc

        worker = threading.Thread(target=second_transaction)
        worker.start()
        _wait_until_blocked_on_a_lock(engine, worker)  # the second insert waits for the first
        first.commit()
        first.close()
        worker.join(timeout=30)

        assert "error" not in outcome, outcome.get("error")
        assert outcome["digest"] == digest
        with Session(engine) as session:
            assert get_blob(session, digest) == DATA
            count = session.scalar(
                text("SELECT count(*) FROM blobs WHERE sha256 = :d"), {"d": digest}
            )
        assert count == 1
        engine.dispose()


def _wait_until_blocked_on_a_lock(engine, worker: threading.Thread) -> None:
    """Return once some other backend of this database waits on a lock (or the worker ended)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with engine.connect() as probe:
        for _ in range(1000):  # a bound on polling, not a timing assertion
            if not worker.is_alive() or probe.execute(query).scalar():
                return
            time.sleep(0.01)
