"""The in-process coordinator groups requests in one transaction, committed before a receipt.

Another connection to the same SQLite file sees only what was committed, so it tells what is
durable at each moment: a task handed out may wait for the next commit, an accepted update never.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select

from coordinator.config import JobCreate
from coordinator.db.models import Lease, Update
from coordinator.db.session import transaction
from coordinator.services import jobs
from device_sdk.client import CoordinatorClient
from device_sdk.errors import ProtocolError
from fedge.clock import ManualClock
from fedge.protocol import EligibilityFacts, Task
from simulator.inprocess import InProcessCoordinator
from tests.coordinator.services.world import delta, register_tiny_plan


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[InProcessCoordinator]:
    clock = ManualClock(1_000.0)
    with InProcessCoordinator(tmp_path, clock, rate_limit_per_minute=1_000_000) as coordinator:
        assert coordinator.group is not None
        coordinator.group.open()
        with transaction(coordinator.app.state.sessions) as session:
            plan = register_tiny_plan(session, now=clock.now())
            job = JobCreate.model_validate({"name": "grouped", "plan_id": plan.id})
            jobs.create_job(session, job, now=clock.now())
        coordinator.group.commit()
        yield coordinator


@pytest.fixture
def observer(coordinator: InProcessCoordinator) -> Iterator[Engine]:
    """A second connection to the coordinator's database: it reads what is committed."""
    engine = create_engine(f"sqlite:///{coordinator.db_path}")
    yield engine
    engine.dispose()


def device(coordinator: InProcessCoordinator) -> CoordinatorClient:
    [token] = coordinator.register_many(1, runtime="test", sdk_version="0")
    client = CoordinatorClient(coordinator.base_url, transport=coordinator.transport)
    client.token = token
    return client


def count(engine: Engine, model: type[Lease] | type[Update]) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(model)).scalar_one()


def test_an_accepted_update_is_committed_before_its_receipt_is_read(coordinator, observer):
    client = device(coordinator)
    task = client.check_in(EligibilityFacts(num_examples=10))
    assert isinstance(task, Task)
    assert count(observer, Lease) == 0  # the task waits in the group for the next commit

    receipt = client.upload(task, delta(0.25), num_examples=10)

    assert receipt.status == "accepted"
    assert count(observer, Update) == 1
    assert count(observer, Lease) == 1


def test_a_refused_upload_undoes_only_its_own_work(coordinator, observer):
    client = device(coordinator)
    task = client.check_in(EligibilityFacts(num_examples=10))
    assert isinstance(task, Task)

    with pytest.raises(ProtocolError):
        client.upload(task, b"not the wire format", num_examples=10)

    assert count(observer, Update) == 0
    assert count(observer, Lease) == 1  # the task handed out before stays, now committed
    retried = client.upload(task, delta(0.25), num_examples=10)
    assert retried.status == "accepted"
