"""Synchronous FedAvg rounds: over-selection, deadlines, minimums, late reports."""

import numpy as np
import pytest

from device_sdk.errors import ProtocolError
from fedge.protocol import RetryWindow, Task
from fedge.wire import encode_vector
from tests.integration.conftest import FACTS


def delta(value: float) -> bytes:
    return encode_vector(np.full(610, value, np.float32))


def test_a_round_selects_target_times_over_selection_devices(coordinator):
    coordinator.create_job(coordinator.publish_plan(), mode="sync", target=4, over_selection=1.5)
    devices = [coordinator.device() for _ in range(7)]

    answers = [d.check_in(FACTS) for d in devices]

    assert sum(isinstance(a, Task) for a in answers) == 6  # ceil(4 × 1.5)
    assert isinstance(answers[-1], RetryWindow)
    assert {a.round for a in answers if isinstance(a, Task)} == {1}


def test_the_target_th_report_closes_the_round_with_the_example_weighted_mean(coordinator):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="sync", target=2, over_selection=1.5
    )
    devices = [coordinator.device() for _ in range(3)]
    tasks = [d.check_in(FACTS) for d in devices]
    start = coordinator.weights(job["id"], 0)

    devices[0].upload(tasks[0], delta(1.0), num_examples=30)
    devices[1].upload(tasks[1], delta(-1.0), num_examples=10)

    assert coordinator.job(job["id"])["current_version"] == 1
    np.testing.assert_allclose(
        coordinator.weights(job["id"], 1), start + (30 * 1.0 + 10 * -1.0) / 40, rtol=1e-6
    )
    with pytest.raises(ProtocolError) as late:  # the over-selected third device is too late
        devices[2].upload(tasks[2], delta(5.0), num_examples=10)
    assert late.value.status == 409


def test_a_round_with_fewer_than_the_minimum_at_its_deadline_fails_and_the_model_is_unchanged(
    coordinator,
):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="sync", target=3, minimum=2, round_seconds=100
    )
    devices = [coordinator.device() for _ in range(3)]
    tasks = [d.check_in(FACTS) for d in devices]
    devices[0].upload(tasks[0], delta(1.0), num_examples=10)  # the other two drop out

    coordinator.clock.advance(101)
    next_task = coordinator.device().check_in(FACTS)  # the overdue round is closed lazily

    assert coordinator.job(job["id"])["current_version"] == 0
    assert isinstance(next_task, Task) and next_task.round == 2
    assert next_task.global_version == 0


def test_a_round_with_the_minimum_at_its_deadline_still_makes_a_version(coordinator):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="sync", target=3, minimum=2, round_seconds=100
    )
    devices = [coordinator.device() for _ in range(3)]
    tasks = [d.check_in(FACTS) for d in devices]
    devices[0].upload(tasks[0], delta(1.0), num_examples=10)
    devices[1].upload(tasks[1], delta(1.0), num_examples=10)

    coordinator.clock.advance(101)
    coordinator.device().check_in(FACTS)

    assert coordinator.job(job["id"])["current_version"] == 1
    assert coordinator.versions(job["id"])[1]["num_updates"] == 2


def test_each_version_names_the_round_that_made_it(coordinator):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="sync", target=1, over_selection=1.0, round_seconds=100
    )
    coordinator.device().check_in(FACTS)  # round 1: its only device vanishes
    coordinator.clock.advance(101)
    device = coordinator.device()
    task = device.check_in(FACTS)  # round 2
    device.upload(task, delta(1.0), num_examples=10)

    versions = coordinator.versions(job["id"])

    assert [(v["number"], v["round"]) for v in versions] == [(0, None), (1, 2)]


def test_an_aborted_device_is_replaced_in_the_same_round(coordinator):
    coordinator.create_job(coordinator.publish_plan(), mode="sync", target=1, over_selection=1.0)
    quitter, spare = coordinator.device(), coordinator.device()
    task = quitter.check_in(FACTS)
    assert isinstance(spare.check_in(FACTS), RetryWindow)

    quitter.abort(task, "user_activity")

    replacement = spare.check_in(FACTS)
    assert isinstance(replacement, Task) and replacement.round == 1
