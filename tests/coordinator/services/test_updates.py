"""Uploads: accepted once per lease, retries acknowledged, stale, late and oversized refused."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from coordinator.db.models import LeaseStatus, Rejection, Update
from coordinator.errors import (
    BadRequest,
    Forbidden,
    InvalidUpdate,
    LeaseClosed,
    StaleUpdate,
    WrongBaseVersion,
)
from tests.coordinator.services.world import INITIAL_WEIGHTS, NUM_PARAMS, World, delta

INTERVAL = 30.0


def stored_updates(world: World) -> int:
    world.session.flush()
    return world.session.scalar(select(func.count(Update.id))) or 0


def test_an_accepted_upload_completes_its_lease_and_waits_in_the_buffer(world: World):
    job = world.job("async", buffer_size=2)
    device = world.device()
    task = world.task(device)

    receipt = world.upload(device, task, delta(0.5), num_examples=20)

    assert (receipt.status, receipt.lease_id, receipt.global_version) == (
        "accepted",
        task.lease_id,
        0,
    )
    assert (receipt.staleness, receipt.clipped) == (0, False)
    assert (world.lease(task).status, world.lease(task).close_reason) == (
        LeaseStatus.COMPLETED,
        "uploaded",
    )
    [update] = world.session.scalars(select(Update).where(Update.job_id == job.id))
    assert (update.num_examples, update.version, update.norm) == (20, None, pytest.approx(1.0))


def test_the_kth_accepted_update_makes_the_next_version_from_the_buffer(world: World):
    job = world.job("async", buffer_size=2)
    devices = [world.device() for _ in range(2)]
    tasks = [world.task(device) for device in devices]

    world.upload(devices[0], tasks[0], delta(1.0), num_examples=30)
    receipt = world.upload(devices[1], tasks[1], delta(-1.0), num_examples=10)

    assert receipt.global_version == 1
    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS + (30 - 10) / 40)


def test_a_retried_upload_of_the_same_bytes_is_already_accepted_and_stores_nothing_new(
    world: World,
):
    world.job("async", buffer_size=2)
    device = world.device()
    task = world.task(device)
    world.upload(device, task, delta(0.5))

    again = world.upload(device, task, delta(0.5))

    assert (again.status, again.lease_id, again.staleness) == ("already_accepted", task.lease_id, 0)
    assert stored_updates(world) == 1


def test_a_second_different_update_on_a_completed_lease_is_refused(world: World):
    world.job("async", buffer_size=2)
    device = world.device()
    task = world.task(device)
    world.upload(device, task, delta(0.5))

    with pytest.raises(LeaseClosed, match="already delivered a different update"):
        world.upload(device, task, delta(0.25))
    assert stored_updates(world) == 1


def test_an_update_at_max_staleness_is_accepted_and_one_beyond_is_refused_as_stale(
    world: World,
):
    world.job("async", concurrency=3, buffer_size=1, max_staleness=1)
    devices = [world.device() for _ in range(3)]
    tasks = [world.task(device) for device in devices]  # all three train from version 0
    world.upload(devices[0], tasks[0], delta(0.1))  # → version 1

    at_bound = world.upload(devices[1], tasks[1], delta(0.1))  # 1 stale → version 2

    assert (at_bound.status, at_bound.staleness, at_bound.global_version) == ("accepted", 1, 2)
    with pytest.raises(StaleUpdate, match="update is 2 versions stale; this job accepts at most 1"):
        world.upload(devices[2], tasks[2], delta(0.1))


def test_a_stale_refusal_is_counted_and_closes_the_lease_for_good(world: World):
    job = world.job("async", concurrency=2, buffer_size=1, max_staleness=0)
    late, early = world.device(), world.device()
    late_task, early_task = world.task(late), world.task(early)
    world.upload(early, early_task, delta(0.1))
    with pytest.raises(StaleUpdate) as refused:
        world.upload(late, late_task, delta(0.1))

    world.record_rejection(refused.value, late, late_task)

    lease = world.lease(late_task)
    assert (lease.status, lease.close_reason) == (LeaseStatus.REJECTED, "stale")
    [rejection] = world.session.scalars(select(Rejection))
    assert (rejection.job_id, rejection.lease_id, rejection.reason) == (
        job.id,
        late_task.lease_id,
        "stale",
    )


def test_an_upload_after_the_lease_deadline_is_refused_as_lease_closed(world: World):
    world.job("async", task={"lease_seconds": 100})
    device = world.device()
    task = world.task(device)

    world.clock.advance(101)

    with pytest.raises(LeaseClosed, match=r"expired 1\.0 s ago"):
        world.upload(device, task, delta(0.1))
    assert stored_updates(world) == 0


def test_an_upload_from_a_device_silent_past_the_grace_is_refused_before_the_deadline(
    world: World,
):
    world.job("async", task={"lease_seconds": 900, "heartbeat_seconds": INTERVAL})
    device = world.device()
    task = world.task(device)

    world.clock.advance(100)  # alive until 90 s: 10 s past the grace

    with pytest.raises(LeaseClosed, match=r"went silent \(10\.0 s past the heartbeat grace\)"):
        world.upload(device, task, delta(0.1))


def test_an_update_above_the_norm_bound_is_refused_under_the_reject_policy(world: World):
    world.job("async", max_update_norm=1.0, norm_policy="reject")
    device = world.device()
    task = world.task(device)

    with pytest.raises(InvalidUpdate, match="update norm 2 exceeds the bound 1") as refused:
        world.upload(device, task, delta(1.0))  # norm √4 = 2
    assert refused.value.reason == "norm_too_large"


def test_an_update_above_the_norm_bound_is_scaled_to_it_under_the_clip_policy(world: World):
    job = world.job("async", buffer_size=1, max_update_norm=1.0, norm_policy="clip")
    device = world.device()
    task = world.task(device)

    receipt = world.upload(device, task, delta(1.0))  # norm 2: halved

    assert (receipt.status, receipt.clipped, receipt.global_version) == ("accepted", True, 1)
    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS + 0.5, rtol=1e-6)


def test_an_update_within_the_norm_bound_is_accepted_as_it_is(world: World):
    job = world.job("async", buffer_size=1, max_update_norm=2.0, norm_policy="clip")
    device = world.device()

    receipt = world.upload(device, world.task(device), delta(1.0))  # norm exactly 2

    assert receipt.clipped is False
    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS + 1.0)


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (delta(*[0.1] * (NUM_PARAMS + 1)), "invalid_update", "not a valid weight delta"),
        (delta(0.1, float("nan"), 0.1, 0.1), "non_finite", "NaN or Inf"),
    ],
    ids=["wrong_length", "nan"],
)
def test_an_update_that_cannot_be_aggregated_is_refused_with_its_reason(
    world: World, body, reason, message
):
    world.job("async")
    device = world.device()

    with pytest.raises(InvalidUpdate, match=message) as refused:
        world.upload(device, world.task(device), body)
    assert refused.value.reason == reason


def test_an_update_trained_from_another_version_than_its_lease_handed_out_is_refused(
    world: World,
):
    world.job("async")
    device = world.device()
    task = world.task(device)

    with pytest.raises(WrongBaseVersion, match="handed out version 0"):
        world.upload(device, task, delta(0.1), base_version=1)


@pytest.mark.parametrize("num_examples", [0, 10_000_001])
def test_an_example_count_outside_its_range_is_a_bad_request(world: World, num_examples):
    world.job("async")
    device = world.device()

    with pytest.raises(BadRequest, match=r"num_examples must lie in \[1, 10000000\]"):
        world.upload(device, world.task(device), delta(0.1), num_examples=num_examples)


def test_an_upload_on_another_devices_lease_is_forbidden(world: World):
    world.job("async")
    task = world.task(world.device())

    with pytest.raises(Forbidden, match="belongs to another device"):
        world.upload(world.device(), task, delta(0.1))
