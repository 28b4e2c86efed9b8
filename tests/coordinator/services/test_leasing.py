"""Check-in and leases: room in a job, eligibility, one open lease per device, expiry."""

from __future__ import annotations

import pytest

from coordinator.config import HEARTBEAT_GRACE
from coordinator.db.models import LeaseStatus
from coordinator.errors import Forbidden, LeaseClosed
from coordinator.services import leasing
from tests.coordinator.services.world import World, delta, eligible

INTERVAL = 30.0


def test_with_no_running_job_a_device_gets_a_retry_window_around_half_the_longest(world: World):
    answer = world.check_in(world.device())

    assert answer.task is None and answer.retry is not None
    assert answer.retry.reason == "no job is running"
    assert (answer.retry.min, answer.retry.max) == (900.0, 2700.0)  # mean 1800 s, ±50 %


def test_an_async_job_leases_at_most_concurrency_devices_at_once(world: World):
    job = world.job("async", concurrency=2)

    answers = [world.check_in(world.device()) for _ in range(3)]

    assert [answer.task is not None for answer in answers] == [True, True, False]
    assert answers[2].retry is not None
    assert answers[2].retry.reason == f"job {job.id} has all the devices it needs now"


def test_a_task_names_the_lease_the_current_version_and_the_plans_hyper_parameters(world: World):
    job = world.job("async", task={"lease_seconds": 120, "local_epochs": 3})

    task = world.task(world.device())

    assert (task.job_id, task.global_version, task.round) == (job.id, 0, None)
    assert task.plan_sha256 == world.plan.plan_sha256
    assert task.deadline == world.now + 120
    assert (task.hparams.local_epochs, task.hparams.learning_rate) == (3, 0.1)
    assert world.lease(task).status == LeaseStatus.ACTIVE


def test_a_device_checking_in_again_gets_the_same_lease_not_a_second_slot(world: World):
    world.job("async", concurrency=2)
    device = world.device()

    first, again = world.task(device), world.task(device)

    assert again.lease_id == first.lease_id
    assert len(world.active_leases(device)) == 1
    assert world.check_in(world.device()).task is not None  # the second slot is still free


@pytest.mark.parametrize(
    ("population", "facts", "reason"),
    [
        ({"require_charging": True}, {"charging": False}, "not charging"),
        ({"require_idle": True}, {"idle": False}, "not idle"),
        ({"require_unmetered": True}, {"unmetered": False}, "on a metered network"),
        ({"min_free_memory_mb": 512}, {"free_memory_mb": 256}, "needs 512.0 MB free memory"),
        ({"min_examples": 100}, {"num_examples": 99}, "needs at least 100 local examples"),
    ],
)
def test_an_ineligible_device_is_refused_with_the_reason_and_holds_no_lease(
    world: World, population, facts, reason
):
    world.job("async", population=population)
    device = world.device()

    answer = world.check_in(device, eligible(**facts))

    assert answer.task is None and answer.retry is not None
    assert answer.retry.reason == reason
    assert world.active_leases(device) == []


def test_a_device_that_contributed_within_the_separation_is_refused_until_it_has_passed(
    world: World,
):
    world.job("async", buffer_size=1, population={"min_separation_seconds": 3600})
    device = world.device()
    world.upload(device, world.task(device), delta(0.1))

    world.clock.advance(3599)
    too_soon = world.check_in(device)
    world.clock.advance(1)
    later = world.check_in(device)

    assert too_soon.retry is not None and too_soon.retry.reason == "contributed too recently"
    assert later.task is not None


def test_the_retry_window_spreads_the_seen_devices_over_the_jobs_free_slots(world: World):
    world.job("async", concurrency=1, task={"lease_seconds": 600})
    world.task(world.device())

    refused = world.check_in(world.device())

    # 2 devices seen × 300 s per task (half a lease, before any task ended) / 1 slot = 600 s
    assert refused.retry is not None
    assert (refused.retry.min, refused.retry.max) == (300.0, 900.0)


def test_an_aborted_lease_frees_its_slot_at_once(world: World):
    world.job("async", concurrency=1)
    holder = world.device()
    task = world.task(holder)

    leasing.abort(world.session, holder, task.lease_id, reason="battery", now=world.now)

    assert world.lease(task).status == LeaseStatus.ABORTED
    assert world.lease(task).close_reason == "aborted:battery"
    assert world.check_in(world.device()).task is not None


def test_an_abort_keeps_what_the_device_said_about_it(world: World):
    world.job("async")
    device = world.device()
    task = world.task(device)

    leasing.abort(
        world.session, device, task.lease_id, reason="error", detail="diverged: loss nan", now=0
    )

    assert world.lease(task).abort_detail == "diverged: loss nan"


def test_a_device_whose_runtime_cannot_run_the_plan_is_not_leased_it_again(world: World):
    world.job("async", concurrency=2)
    broken, healthy = world.device(), world.device()
    task = world.task(broken)
    leasing.abort(
        world.session, broken, task.lease_id, reason="bad_plan", detail="op not found", now=0
    )

    again = world.check_in(broken)

    assert again.task is None and again.retry is not None
    assert again.retry.reason == (
        "its runtime could not run this job's plan (bad_plan): not leased it again"
    )
    assert world.check_in(healthy).task is not None


def test_a_device_that_aborted_for_another_reason_is_leased_again(world: World):
    world.job("async", concurrency=1)
    device = world.device()
    leasing.abort(world.session, device, world.task(device).lease_id, reason="error", now=0)

    assert world.check_in(device).task is not None


def test_aborting_a_lease_that_is_no_longer_active_is_refused(world: World):
    world.job("async")
    device = world.device()
    task = world.task(device)
    leasing.abort(world.session, device, task.lease_id, reason="error", now=world.now)

    with pytest.raises(LeaseClosed, match="already aborted"):
        leasing.abort(world.session, device, task.lease_id, reason="error", now=world.now)


def test_a_lease_past_its_deadline_holds_no_slot_even_before_the_sweep(world: World):
    world.job("async", concurrency=1, task={"lease_seconds": 100})
    world.task(world.device())

    world.clock.advance(100)
    at_deadline = world.check_in(world.device())
    world.clock.advance(1)
    after = world.check_in(world.device())

    assert at_deadline.task is None
    assert after.task is not None


def test_a_device_whose_lease_ran_out_gets_a_new_one_and_the_old_is_recorded_expired(
    world: World,
):
    world.job("async", task={"lease_seconds": 100})
    device = world.device()
    old = world.task(device)

    world.clock.advance(101)
    new = world.task(device)

    assert new.lease_id != old.lease_id
    assert (world.lease(old).status, world.lease(old).close_reason) == (
        LeaseStatus.EXPIRED,
        "deadline",
    )
    assert [lease.id for lease in world.active_leases(device)] == [new.lease_id]


def test_a_heartbeat_keeps_the_lease_alive_for_the_grace_intervals_from_now(world: World):
    world.job("async", task={"heartbeat_seconds": INTERVAL})
    device = world.device()
    task = world.task(device)
    issued = world.now

    world.clock.advance(50)
    lease = leasing.heartbeat(world.session, device, task.lease_id, now=world.now)

    assert task.heartbeat_seconds == INTERVAL
    assert lease.alive_until == issued + 50 + HEARTBEAT_GRACE * INTERVAL


def test_a_silent_lease_expires_after_the_grace_intervals_long_before_its_deadline(
    world: World,
):
    job = world.job("async", task={"lease_seconds": 900, "heartbeat_seconds": INTERVAL})
    silent, beating = world.device(), world.device()
    lost, kept = world.task(silent), world.task(beating)

    world.clock.advance(HEARTBEAT_GRACE * INTERVAL - 1)
    leasing.heartbeat(world.session, beating, kept.lease_id, now=world.now)
    world.clock.advance(2)
    closed = leasing.expire_leases(world.session, job.id, now=world.now)

    assert closed == 1
    assert (world.lease(lost).status, world.lease(lost).close_reason) == (
        LeaseStatus.EXPIRED,
        "silent",
    )
    assert world.lease(kept).status == LeaseStatus.ACTIVE


def test_a_heartbeat_after_the_grace_period_tells_the_device_to_stop(world: World):
    world.job("async", task={"heartbeat_seconds": INTERVAL})
    device = world.device()
    task = world.task(device)

    world.clock.advance(HEARTBEAT_GRACE * INTERVAL + 1)

    with pytest.raises(LeaseClosed, match="has expired: stop working on it"):
        leasing.heartbeat(world.session, device, task.lease_id, now=world.now)


def test_a_heartbeat_on_another_devices_lease_is_forbidden(world: World):
    world.job("async", task={"heartbeat_seconds": INTERVAL})
    task = world.task(world.device())

    with pytest.raises(Forbidden, match="belongs to another device"):
        leasing.heartbeat(world.session, world.device(), task.lease_id, now=world.now)
