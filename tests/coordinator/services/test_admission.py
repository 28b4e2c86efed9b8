"""Uniform admission: back to the pool after a task, a random order per window, the cap."""

from __future__ import annotations

import dataclasses
import heapq
import math
import uuid
from collections import Counter

import numpy as np
import pytest

from coordinator.db.models import Device, Job, Lease, LeaseStatus
from coordinator.errors import ContributionCapped
from coordinator.services import admission
from fedge.protocol import Task
from tests.coordinator.services.world import World, delta

WINDOW = 30.0


def _at_window_start(world: World) -> None:
    """Move the clock to the start of a later admission window."""
    world.clock.advance(math.ceil(world.now / WINDOW) * WINDOW - world.now + WINDOW)


def _admitted_task(world: World, job: Job, device: Device) -> Task:
    """The task ``device`` gets once its ticket's turn has come in the current window."""
    world.clock.advance(
        admission.seconds_to_turn(job.id, device.id, window_seconds=WINDOW, now=world.now)
    )
    return world.task(device)


def test_a_ticket_is_fixed_within_a_window_and_drawn_again_in_the_next():
    device = str(uuid.uuid4())

    same = {admission.ticket(1, 7, device) for _ in range(3)}
    others = {admission.ticket(1, window, device) for window in range(8, 40)}

    assert len(same) == 1
    assert len(others) == 32
    assert all(0.0 <= u < 1.0 for u in same | others)


def test_an_early_device_is_told_to_come_back_when_its_tickets_turn_comes(world: World):
    job = world.job(population={"admission_window_seconds": WINDOW})
    device = world.device()
    _at_window_start(world)
    wait = admission.seconds_to_turn(job.id, device.id, window_seconds=WINDOW, now=world.now)

    early = world.check_in(device)
    world.clock.advance(wait)
    on_time = world.check_in(device)

    assert early.task is None and early.retry is not None
    assert early.retry.min == max(wait, world.settings.retry_min_seconds)
    assert "random order" in early.retry.reason
    assert on_time.task is not None


def test_a_device_that_just_reported_goes_back_to_the_pool_instead_of_taking_its_slot(
    world: World,
):
    job = world.job(concurrency=1, population={"admission_window_seconds": WINDOW})
    reporter = world.device()
    world.upload(reporter, _admitted_task(world, job, reporter), delta(1.0))

    again = world.check_in(reporter)

    assert again.task is None and again.retry is not None
    assert again.retry.reason == "a task just ended: back to the pool of devices checking in"


def test_a_device_at_its_contribution_cap_gets_no_task_until_the_job_moves_on(world: World):
    cap = {"window_versions": 2, "max_contributions": 1}
    job = world.job(buffer_size=1, population={"contribution_cap": cap})
    capped, other = world.device(), world.device()
    world.upload(capped, world.task(capped), delta(1.0))  # version 1

    refused = world.check_in(capped)
    world.upload(other, world.task(other), delta(1.0))  # version 2: version 1 leaves the window
    admitted = world.check_in(capped)

    assert refused.retry is not None
    assert refused.retry.reason == ("contributed 1 times in 2 versions: the job's contribution cap")
    assert admitted.task is not None
    assert world.current_version(job) == 2


def test_an_update_over_the_cap_is_refused_at_upload_and_its_lease_closed(world: World):
    cap = {"window_versions": 3, "max_contributions": 1}
    job = world.job(buffer_size=2, population={"contribution_cap": cap})
    device = world.device()
    first = world.task(device)
    # Two check-ins racing past the check-in test: a second lease of the same device.
    second = Lease(
        id=str(uuid.uuid4()),
        job_id=job.id,
        device_id=device.id,
        base_version=0,
        status=LeaseStatus.ACTIVE,
        issued_at=world.now,
        deadline_at=world.now + 600,
    )
    world.session.add(second)
    world.upload(device, first, delta(1.0))  # pending in the buffer: it counts

    raced = dataclasses.replace(first, lease_id=second.id)

    with pytest.raises(ContributionCapped, match="made 1 of its updates allowed in 3") as refused:
        world.upload(device, raced, delta(1.0))
    world.record_rejection(refused.value, device, raced)

    assert (world.lease(raced).status, world.lease(raced).close_reason) == (
        LeaseStatus.REJECTED,
        "contribution_capped",
    )


# --- participation over a run ------------------------------------------------------------------

DEVICES = 20
CONTRIBUTIONS = 160  # 8 per device on average
TASK_SECONDS = 60.0
# χ²(19) at 0.999 (scipy.stats.chi2.ppf(0.999, 19)): a uniform sampler fails this test in 0.1 %
# of runs (device ids, hence tickets, are fresh UUIDs each run). Participation under pace
# steering is more regular than a multinomial's, so the real false-alarm rate is lower still.
CHI2_19_AT_0_999 = 43.820


def _participation(world: World, **population: object) -> list[int]:
    """Accepted updates per device when each device checks in again as soon as it reports.

    An async job of 3 slots; a device that gets a task reports after ``TASK_SECONDS`` and checks
    in at once, as the SDK's session does; a refused one comes back inside its retry window.
    """
    job = world.job(concurrency=3, buffer_size=3, population=population)
    devices = [world.device() for _ in range(DEVICES)]
    rng = np.random.default_rng(20)
    start = world.now
    # (when, order, device, its task or None): an upload when a task is due, else a check-in
    due: list[tuple[float, int, int, Task | None]] = []
    for i in range(DEVICES):
        heapq.heappush(due, (start + float(rng.uniform(0, 600)), len(due), i, None))
    counts = Counter[int]()
    order = DEVICES
    while sum(counts.values()) < CONTRIBUTIONS:
        when, _, i, task = heapq.heappop(due)
        world.clock.advance(when - world.now)
        order += 1
        if task is not None:
            world.upload(devices[i], task, delta(0.01))
            counts[i] += 1
            heapq.heappush(due, (world.now, order, i, None))  # and it checks in again at once
            continue
        answer = world.check_in(devices[i])
        if answer.task is not None:
            heapq.heappush(due, (world.now + TASK_SECONDS, order, i, answer.task))
        else:
            assert answer.retry is not None
            back = float(rng.uniform(answer.retry.min, answer.retry.max))
            heapq.heappush(due, (world.now + back, order, i, None))
    assert world.current_version(job) == CONTRIBUTIONS // 3
    return [counts[i] for i in range(DEVICES)]


def _chi_square_uniform(counts: list[int]) -> float:
    mean = sum(counts) / len(counts)
    return sum((c - mean) ** 2 / mean for c in counts)


def test_with_uniform_admission_participation_is_uniform_over_the_devices(world: World):
    counts = _participation(world, admission_window_seconds=WINDOW)

    assert _chi_square_uniform(counts) < CHI2_19_AT_0_999, counts


def test_first_come_first_served_lets_the_reporters_keep_their_slots(world: World):
    counts = _participation(world)

    assert _chi_square_uniform(counts) > 10 * CHI2_19_AT_0_999, counts
    assert sum(sorted(counts)[-3:]) == CONTRIBUTIONS  # the first three devices do everything


def test_a_cap_of_one_per_version_gives_a_sync_reporter_no_second_place_in_its_round(
    world: World,
):
    world.job(
        "sync",
        target=2,
        over_selection=2.0,
        population={"contribution_cap": {"window_versions": 1}},
    )
    reporter = world.device()
    world.upload(reporter, world.task(reporter), delta(1.0))

    again = world.check_in(reporter)

    assert again.task is None and again.retry is not None
    assert again.retry.reason == "contributed 1 times in 1 versions: the job's contribution cap"
