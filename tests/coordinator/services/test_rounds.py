"""Synchronous rounds: the cohort, the close at target, the deadline and its minimum."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.db.models import LeaseStatus, RoundStatus
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
