"""Synchronous rounds: the cohort, the close at target, the deadline and its minimum."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.db.models import Device, Job, LeaseStatus, RoundStatus
from coordinator.errors import LeaseClosed
from coordinator.services import leasing
from tests.coordinator.services.world import INITIAL_WEIGHTS, World, delta


def test_a_sync_round_opens_with_target_times_over_selection_as_its_cohort(world: World):
    job = world.job("sync", target=4, over_selection=1.5, round_seconds=300)
    opened = world.now

    answers = [world.check_in(world.device()) for _ in range(7)]

    assert [answer.task is not None for answer in answers] == [True] * 6 + [False]  # ⌈4 × 1.5⌉
    assert {answer.task.round for answer in answers if answer.task} == {1}
    [round_] = world.rounds(job)
    assert (round_.status, round_.to_select, round_.target) == (RoundStatus.OPEN, 6, 4)
    assert round_.minimum == 4  # unset: ⌈80 % of the target⌉
    assert round_.deadline_at == opened + 300


def test_a_round_lease_ends_at_the_round_deadline_when_that_comes_first(world: World):
    world.job("sync", round_seconds=100, task={"lease_seconds": 600})

    task = world.task(world.device())

    assert task.deadline == world.now + 100


def test_an_aborted_lease_frees_its_place_in_the_cohort(world: World):
    world.job("sync", target=1, over_selection=1.0)
    quitter = world.device()
    task = world.task(quitter)
    assert world.check_in(world.device()).task is None

    leasing.abort(world.session, quitter, task.lease_id, reason="user_activity", now=world.now)

    assert world.check_in(world.device()).task is not None


def test_the_target_th_report_closes_the_round_with_the_example_weighted_mean(world: World):
    job = world.job("sync", target=2, over_selection=1.5)
    devices = [world.device() for _ in range(3)]
    tasks = [world.task(device) for device in devices]

    world.upload(devices[0], tasks[0], delta(1.0), num_examples=30)
    world.upload(devices[1], tasks[1], delta(-1.0), num_examples=10)

    [round_] = world.rounds(job)
    assert (round_.status, round_.reported, round_.closed_at) == (
        RoundStatus.COMPLETED,
        2,
        world.now,
    )
    assert world.current_version(job) == 1
    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS + (30 - 10) / 40)


def test_closing_a_round_cuts_its_over_selected_leases_and_refuses_their_reports(world: World):
    world.job("sync", target=1, over_selection=2.0)
    first, straggler = world.device(), world.device()
    first_task, straggler_task = world.task(first), world.task(straggler)

    world.upload(first, first_task, delta(1.0))

    cut = world.lease(straggler_task)
    assert (cut.status, cut.close_reason) == (LeaseStatus.REJECTED, "round_closed")
    with pytest.raises(LeaseClosed, match=r"is rejected \(round_closed\)"):
        world.upload(straggler, straggler_task, delta(1.0))


def test_a_round_below_its_minimum_at_the_deadline_fails_and_the_model_is_unchanged(
    world: World,
):
    job = world.job("sync", target=3, minimum=2, round_seconds=100)
    devices = [world.device() for _ in range(3)]
    tasks = [world.task(device) for device in devices]
    world.upload(devices[0], tasks[0], delta(1.0))  # the other two drop out

    world.clock.advance(101)
    next_task = world.task(world.device())  # an overdue round is closed at the next check-in

    first, second = world.rounds(job)
    assert (first.status, first.reported, first.closed_at) == (RoundStatus.FAILED, 1, world.now)
    assert (second.status, second.number, second.base_version) == (RoundStatus.OPEN, 2, 0)
    assert next_task.round == 2
    assert world.current_version(job) == 0
    assert {world.lease(task).status for task in tasks[1:]} == {LeaseStatus.EXPIRED}


def test_a_round_with_its_minimum_but_not_its_target_at_the_deadline_still_counts(
    world: World,
):
    job = world.job("sync", target=3, minimum=2, round_seconds=100)
    devices = [world.device() for _ in range(3)]
    tasks = [world.task(device) for device in devices]
    world.upload(devices[0], tasks[0], delta(1.0), num_examples=10)
    world.upload(devices[1], tasks[1], delta(3.0), num_examples=10)

    world.clock.advance(101)
    world.sweep()

    [round_] = world.rounds(job)
    assert (round_.status, round_.reported) == (RoundStatus.COMPLETED, 2)
    assert world.current_version(job) == 1
    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS + 2.0)


def _failed_first_round(
    world: World, *, reported: int, **aggregation: object
) -> tuple[Job, list[Device]]:
    """A sync job of target 3 = minimum 3 whose first round failed with ``reported`` reports."""
    job = world.job(
        "sync", target=3, minimum=3, over_selection=1.0, round_seconds=100, **aggregation
    )
    devices = [world.device() for _ in range(3)]
    tasks = [world.task(device) for device in devices]
    for value, (device, task) in enumerate(zip(devices[:reported], tasks, strict=False), start=1):
        world.upload(device, task, delta(float(value)), num_examples=10)
    world.clock.advance(101)  # the others vanished: the round fails at its deadline
    world.sweep()
    return job, devices


def test_a_failed_rounds_reports_carry_into_the_next_round_and_enter_its_version(world: World):
    job, _ = _failed_first_round(world, reported=2)
    late = world.device()

    world.upload(late, world.task(late), delta(6.0), num_examples=10)

    first, second = world.rounds(job)
    assert (first.status, first.reported) == (RoundStatus.FAILED, 2)
    assert (second.status, second.reported, second.base_version) == (RoundStatus.COMPLETED, 3, 0)
    assert world.current_version(job) == 1
    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS + (1 + 2 + 6) / 3)


def test_carried_reports_hold_their_places_in_the_next_rounds_cohort(world: World):
    job, _ = _failed_first_round(world, reported=2)

    answers = [world.check_in(world.device()) for _ in range(2)]

    assert [answer.task is not None for answer in answers] == [True, False]  # 3 = 2 carried + 1
    assert world.rounds(job)[1].reported == 2


def test_carried_reports_are_dropped_once_older_than_carry_rounds(world: World):
    job, _ = _failed_first_round(world, reported=2, carry_rounds=1)
    world.check_in(world.device())  # round 2 opens with the two reports carried in
    world.clock.advance(101)  # round 2 fails as well
    world.sweep()

    world.check_in(world.device())  # round 3: round 1's reports are two rounds old now

    reported = [round_.reported for round_ in world.rounds(job)]
    assert reported == [2, 2, 0]
    assert world.current_version(job) == 0


def test_with_carry_rounds_zero_a_failed_rounds_reports_are_lost(world: World):
    job, _ = _failed_first_round(world, reported=2, carry_rounds=0)

    world.check_in(world.device())

    assert [round_.reported for round_ in world.rounds(job)] == [2, 0]
