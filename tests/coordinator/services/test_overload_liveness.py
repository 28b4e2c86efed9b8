"""Lease liveness under overload: the time a request waits in the server is not the device's.

An upload is judged alive as it *arrived*; the sweep judges leases ``slack`` seconds in the
past (the age of the oldest working request still queued), so no lease is closed under a
heartbeat or upload that arrived in its lifetime.
"""

from __future__ import annotations

import pytest

from coordinator.config import HEARTBEAT_GRACE
from coordinator.db.models import LeaseStatus
from coordinator.errors import LeaseClosed
from coordinator.services import leasing, maintenance, updates
from tests.coordinator.services.world import World, delta

INTERVAL = 10.0
GRACE = HEARTBEAT_GRACE * INTERVAL
TASK = {"lease_seconds": 900, "heartbeat_seconds": INTERVAL}


def test_an_upload_that_arrived_inside_the_grace_is_accepted_though_served_after_it(
    world: World,
):
    world.job("async", task=TASK, buffer_size=10)
    device = world.device()
    task = world.task(device)
    world.clock.advance(GRACE - 1)
    arrived = world.now
    world.clock.advance(20)  # waiting in the server's queue

    receipt = updates.upload(
        world.session,
        device,
        task.lease_id,
        delta(0.1),
        base_version=task.global_version,
        num_examples=10,
        metrics={},
        now=world.now,
        arrived=arrived,
    )

    assert receipt.status == "accepted"
    assert world.lease(task).closed_at == world.now  # recorded when served


def test_an_upload_that_arrived_after_the_grace_is_refused_however_short_its_wait(
    world: World,
):
    world.job("async", task=TASK, buffer_size=10)
    device = world.device()
    task = world.task(device)
    world.clock.advance(GRACE + 1)

    with pytest.raises(LeaseClosed, match="went silent"):
        updates.upload(
            world.session,
            device,
            task.lease_id,
            delta(0.1),
            base_version=task.global_version,
            num_examples=10,
            metrics={},
            now=world.now,
            arrived=world.now,
        )


def test_the_sweep_spares_a_lease_silent_for_less_than_the_backlogs_age(world: World):
    job = world.job("async", task=TASK)
    task = world.task(world.device())
    world.clock.advance(GRACE + 5)  # silent 5 s past its grace; requests 10 s old still queued

    closed = leasing.expire_leases(world.session, job.id, now=world.now, slack=10)

    assert closed == 0
    assert world.lease(task).status == LeaseStatus.ACTIVE


def test_the_sweep_expires_a_lease_silent_since_before_the_backlog_began(world: World):
    job = world.job("async", task=TASK)
    task = world.task(world.device())
    world.clock.advance(GRACE + 30)

    closed = leasing.expire_leases(world.session, job.id, now=world.now, slack=10)

    lease = world.lease(task)
    assert closed == 1
    assert (lease.status, lease.close_reason, lease.closed_at) == (
        LeaseStatus.EXPIRED,
        "silent",
        world.now,
    )


def test_the_periodic_sweep_passes_its_slack_to_the_leases_it_judges(world: World):
    world.job("async", task=TASK)
    task = world.task(world.device())
    world.clock.advance(GRACE + 5)
    world.session.flush()

    maintenance.sweep(world.sessions, now=world.now, slack=10)
    spared = world.lease(task).status
    maintenance.sweep(world.sessions, now=world.now, slack=0)

    assert spared == LeaseStatus.ACTIVE
    assert world.lease(task).status == LeaseStatus.EXPIRED
