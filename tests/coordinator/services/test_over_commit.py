"""Over-commit: an asynchronous job learns its dropout from its leases and leases more."""

from __future__ import annotations

from coordinator.config import HEARTBEAT_GRACE
from coordinator.services import leasing
from tests.coordinator.services.world import World, delta

INTERVAL = 30.0
REPORT_SECONDS = 60.0


def run_leases(world: World, job, *, pairs: int) -> None:
    """``pairs`` times: two devices take a task; one reports after a minute, one goes silent."""
    for _ in range(pairs):
        reporter, vanisher = world.device(), world.device()
        task, _ = world.task(reporter), world.task(vanisher)
        world.clock.advance(REPORT_SECONDS)
        world.upload(reporter, task, delta(0.01))
        world.clock.advance(HEARTBEAT_GRACE * INTERVAL)  # the silent one's lease dies


def test_before_enough_leases_an_over_committing_job_leases_its_concurrency(world: World):
    job = world.job("async", concurrency=2, over_commit=True, task={"heartbeat_seconds": INTERVAL})
    run_leases(world, job, pairs=5)

    answers = [world.check_in(world.device()) for _ in range(3)]

    assert [answer.task is not None for answer in answers] == [True, True, False]


def test_a_job_that_sees_half_its_leases_vanish_leases_more_to_keep_its_useful_slots(
    world: World,
):
    job = world.job("async", concurrency=2, over_commit=True, task={"heartbeat_seconds": INTERVAL})
    run_leases(world, job, pairs=15)

    plan = leasing.concurrency(world.session, job, leasing.job_config(job), now=world.now)
    granted = sum(world.check_in(world.device()).task is not None for _ in range(10))

    assert plan.learned
    assert abs(plan.dropout - 0.5) < 0.05
    # a silent lease holds its slot for the heartbeat grace (90 s), a report takes 60 s
    assert abs(plan.hold_ratio - HEARTBEAT_GRACE * INTERVAL / REPORT_SECONDS) < 1e-6
    assert granted == plan.leases == 5  # 2 · (1 + 1.5 · 0.5 / 0.5)


def test_over_commit_never_leases_past_its_cap(world: World):
    job = world.job(
        "async",
        concurrency=2,
        over_commit=True,
        max_over_commit=1.5,
        task={"heartbeat_seconds": INTERVAL},
    )
    run_leases(world, job, pairs=15)

    granted = sum(world.check_in(world.device()).task is not None for _ in range(10))

    assert granted == 3


def test_a_job_without_over_commit_keeps_its_concurrency_whatever_the_dropout(world: World):
    job = world.job("async", concurrency=2, task={"heartbeat_seconds": INTERVAL})
    run_leases(world, job, pairs=15)

    granted = sum(world.check_in(world.device()).task is not None for _ in range(10))

    assert granted == 2
