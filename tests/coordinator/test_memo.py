"""Immutable rows and blobs served from memory: after a committed read, never stale, no ghosts.

These run on a real engine (a SQLite file): a session bound to a test's rolled-back connection
gets no memo at all, so the service suites cannot see these caches.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from coordinator.config import JobCreate
from coordinator.db.blobs import put_blob
from coordinator.db.migrate import upgrade
from coordinator.db.models import Stage, Version
from coordinator.db.session import make_engine, make_session_factory, transaction
from coordinator.errors import NotFound
from coordinator.services import jobs, plans
from coordinator.services.memo import BlobCache
from tests.coordinator.services.world import register_tiny_plan


@pytest.fixture
def engine(tmp_path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'fedge.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


class Statements:
    """How many statements the engine sent while counting (BEGIN included)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._one)

    def _one(self, *_: object) -> None:
        self.count += 1


def test_a_committed_plan_is_read_once_then_served_from_memory(engine, sessions):
    with transaction(sessions) as session:
        plan_id = register_tiny_plan(session, now=0.0).id
    with transaction(sessions) as session:
        plans.get_plan(session, plan_id)  # the first committed read

    statements = Statements(engine)
    with sessions() as session:
        plan = plans.get_plan(session, plan_id)
        assert plan.num_params == 4
        assert plan in session  # an object of this session, as session.get gives
    assert statements.count == 0


def test_a_plan_read_by_a_transaction_that_rolled_back_leaves_no_ghost(sessions):
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        ghost = register_tiny_plan(session, now=0.0, num_params=7)
        assert plans.get_plan(session, ghost.id).num_params == 7
        raise RuntimeError("the registering transaction fails after reading its own plan")

    with transaction(sessions) as session:
        real = register_tiny_plan(session, now=1.0, num_params=5)
    assert real.id == ghost.id  # SQLite hands the rolled-back id out again
    with transaction(sessions) as session:
        assert plans.get_plan(session, real.id).num_params == 5


def test_a_version_not_yet_made_is_not_remembered_as_missing(sessions):
    with transaction(sessions) as session:
        plan = register_tiny_plan(session, now=0.0)
        job = jobs.create_job(session, _job(plan.id), now=0.0)
    with transaction(sessions) as session, pytest.raises(NotFound):
        jobs.get_version(session, job.id, 1)

    with transaction(sessions) as session:
        weights = jobs.get_version(session, job.id, 0).weights_sha256
        session.add(Version(job_id=job.id, number=1, weights_sha256=weights, created_at=1.0))
    with transaction(sessions) as session:
        assert jobs.get_version(session, job.id, 1).created_at == 1.0


def test_a_remembered_versions_registry_stage_is_read_fresh_after_it_moves(sessions):
    with transaction(sessions) as session:
        plan = register_tiny_plan(session, now=0.0)
        job = jobs.create_job(session, _job(plan.id), now=0.0)
    with transaction(sessions) as session:
        assert jobs.get_version(session, job.id, 0).stage == Stage.CANDIDATE  # now remembered

    with transaction(sessions) as session:
        jobs.get_version(session, job.id, 0).stage = Stage.LIVE  # as the registry moves it

    with transaction(sessions) as session:
        assert jobs.get_version(session, job.id, 0).stage == Stage.LIVE
    with transaction(sessions) as session:
        session.get_one(Version, (job.id, 0)).stage = Stage.RETIRED  # moved by another path
    with transaction(sessions) as session:
        assert jobs.get_version(session, job.id, 0).stage == Stage.RETIRED


def test_blob_cache_serves_bytes_by_digest_and_stays_within_its_capacity(engine, sessions):
    cache = BlobCache(capacity=10)
    with transaction(sessions) as session:
        first = put_blob(session, b"123456", now=0.0)
        second = put_blob(session, b"abcdef", now=0.0)
    with transaction(sessions, read_only=True) as session:
        assert cache.get(session, first) == b"123456"
    statements = Statements(engine)
    with transaction(sessions, read_only=True) as session:
        assert cache.get(session, first) == b"123456"
    assert statements.count == 1  # the BEGIN only: no SELECT of the blob

    with transaction(sessions, read_only=True) as session:
        assert cache.get(session, second) == b"abcdef"  # 12 bytes > 10: the first goes
    statements.count = 0
    with transaction(sessions, read_only=True) as session:
        assert cache.get(session, first) == b"123456"
    assert statements.count == 1 + 1  # read again


def _job(plan_id: int) -> JobCreate:
    return JobCreate.model_validate({"name": "memo", "plan_id": plan_id})
