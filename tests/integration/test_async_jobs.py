"""Asynchronous (FedBuff) jobs against a live coordinator, devices dropping out at will."""

import numpy as np
import pytest

from coordinator.services.devices import LAST_SEEN_RESOLUTION
from device_sdk import PlanRunner, train_locally
from device_sdk.errors import ProtocolError
from fedge.manifest import HyperParameters, PlanManifest
from fedge.protocol import RetryWindow, Task
from fedge.wire import decode_vector, encode_vector
from simulator.datasets import synthetic_fedprox
from tests.integration.conftest import FACTS


def small_delta(value: float = 0.01) -> bytes:
    return encode_vector(np.full(610, value, np.float32))


def test_scripted_devices_train_an_async_job_to_new_versions_with_litert(coordinator):
    plan_id = coordinator.publish_plan()
    job = coordinator.create_job(plan_id, mode="async", concurrency=4, buffer_size=2)
    data = synthetic_fedprox(alpha=0.5, beta=0.5, num_devices=4, rng=np.random.default_rng(0))
    devices = [coordinator.device() for _ in data]
    runner = None

    for _ in range(2):  # two passes over the fleet: 8 updates, K = 2 → 4 versions
        for device, local in zip(devices, data, strict=True):
            task = device.check_in(FACTS)
            assert isinstance(task, Task), task
            plan = device.download(task.plan_url)
            if runner is None:
                manifest = PlanManifest.from_json(
                    (coordinator.plans_dir / "synthetic_logreg.json").read_text()
                )
                runner = PlanRunner(plan, manifest)
            weights = decode_vector(device.download(task.weights_url))
            result = train_locally(
                runner,
                base_weights=weights,
                x=local.x,
                y=local.y,
                hparams=HyperParameters(
                    local_epochs=1, batch_size=10, learning_rate=task.hparams.learning_rate
                ),
                rng=np.random.default_rng(1),
            )
            receipt = device.upload(
                task, encode_vector(result.delta), num_examples=result.num_examples
            )
            assert receipt.status == "accepted"

    versions = coordinator.versions(job["id"])
    assert [v["number"] for v in versions] == [0, 1, 2, 3, 4]
    assert sum(v["num_updates"] for v in versions) == 8
    assert not np.array_equal(coordinator.weights(job["id"], 4), coordinator.weights(job["id"], 0))


def test_a_retried_upload_is_counted_once(coordinator):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=2)
    device = coordinator.device()
    task = device.check_in(FACTS)

    first = device.upload(task, small_delta(), num_examples=10)
    again = device.upload(task, small_delta(), num_examples=10)

    assert (first.status, again.status) == ("accepted", "already_accepted")
    assert coordinator.job(job["id"])["current_version"] == 0  # one update of K = 2


def test_a_different_payload_on_a_used_lease_is_refused(coordinator):
    coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=2)
    device = coordinator.device()
    task = device.check_in(FACTS)
    device.upload(task, small_delta(0.01), num_examples=10)

    with pytest.raises(ProtocolError) as refused:
        device.upload(task, small_delta(0.02), num_examples=10)

    assert refused.value.status == 409
    assert "already delivered a different update" in refused.value.message


def test_a_retried_check_in_gets_the_same_lease_not_a_second_slot(coordinator):
    coordinator.create_job(coordinator.publish_plan(), mode="async", concurrency=1)
    device = coordinator.device()

    first, second = device.check_in(FACTS), device.check_in(FACTS)

    assert isinstance(first, Task) and isinstance(second, Task)
    assert first.lease_id == second.lease_id


def test_a_full_job_answers_with_a_retry_window(coordinator):
    coordinator.create_job(coordinator.publish_plan(), mode="async", concurrency=1)
    coordinator.device().check_in(FACTS)

    answer = coordinator.device().check_in(FACTS)

    assert isinstance(answer, RetryWindow)
    assert 0 < answer.min <= answer.max
    assert "all the devices it needs" in answer.reason


def test_a_vanished_devices_lease_expires_and_frees_its_slot(coordinator):
    coordinator.create_job(
        coordinator.publish_plan(), mode="async", concurrency=1, task={"lease_seconds": 60}
    )
    vanished = coordinator.device()
    lost_task = vanished.check_in(FACTS)
    waiting = coordinator.device()
    assert isinstance(waiting.check_in(FACTS), RetryWindow)

    coordinator.clock.advance(61)
    task = waiting.check_in(FACTS)

    assert isinstance(task, Task)
    with pytest.raises(ProtocolError) as late:
        vanished.upload(lost_task, small_delta(), num_examples=10)
    assert late.value.status == 409
    assert "expired" in late.value.message


def test_an_aborted_task_frees_its_slot_at_once(coordinator):
    coordinator.create_job(coordinator.publish_plan(), mode="async", concurrency=1)
    quitter, waiting = coordinator.device(), coordinator.device()
    task = quitter.check_in(FACTS)

    quitter.abort(task, "battery")

    assert isinstance(waiting.check_in(FACTS), Task)


def test_a_device_that_reports_a_plan_it_cannot_run_is_not_leased_it_again(coordinator):
    coordinator.create_job(coordinator.publish_plan(), mode="async", concurrency=2)
    broken = coordinator.device()
    task = broken.check_in(FACTS)

    broken.abort(task, "bad_plan", "bad_plan: op CUSTOM not supported")
    again = broken.check_in(FACTS)

    assert isinstance(again, RetryWindow)
    assert "could not run this job's plan" in again.reason


def test_an_update_staler_than_the_maximum_is_rejected_and_the_model_is_unchanged(coordinator):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="async", concurrency=3, buffer_size=1, max_staleness=0
    )
    slow, fast = coordinator.device(), coordinator.device()
    slow_task, fast_task = slow.check_in(FACTS), fast.check_in(FACTS)
    fast.upload(fast_task, small_delta(), num_examples=10)  # version 1
    before = coordinator.weights(job["id"], 1)

    with pytest.raises(ProtocolError) as stale:
        slow.upload(slow_task, small_delta(), num_examples=10)

    assert stale.value.status == 409
    assert stale.value.reason == "stale"
    assert "1 versions stale" in stale.value.message and "at most 0" in stale.value.message
    assert coordinator.job(job["id"])["current_version"] == 1
    np.testing.assert_array_equal(coordinator.weights(job["id"], 1), before)


def test_stale_updates_within_the_bound_are_accepted_and_recorded(coordinator):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="async", concurrency=3, buffer_size=1, max_staleness=5
    )
    slow, fast = coordinator.device(), coordinator.device()
    slow_task, fast_task = slow.check_in(FACTS), fast.check_in(FACTS)
    fast.upload(fast_task, small_delta(), num_examples=10)

    receipt = slow.upload(slow_task, small_delta(), num_examples=10)

    assert receipt.staleness == 1
    assert coordinator.versions(job["id"])[-1]["mean_staleness"] == 1.0


def test_ineligible_devices_get_a_retry_window_with_the_reason(coordinator):
    coordinator.create_job(
        coordinator.publish_plan(), mode="async", population={"min_examples": 100}
    )

    answer = coordinator.device().check_in(FACTS)

    assert isinstance(answer, RetryWindow)
    assert "at least 100 local examples" in answer.reason


def test_the_retry_window_follows_the_arrival_rate_the_job_needs(coordinator):
    # Pace steering: with P devices checking in and C slots each busy T seconds, a refused device
    # should come back about every P·T/C seconds — more devices or fewer slots: wait longer.
    assert coordinator.clock is not None
    coordinator.create_job(
        coordinator.publish_plan(), mode="async", concurrency=2, task={"lease_seconds": 100}
    )
    fleet = [coordinator.device() for _ in range(4)]
    for device in fleet[:2]:
        assert isinstance(device.check_in(FACTS), Task)
    small = fleet[2].check_in(FACTS)
    fleet += [coordinator.device() for _ in range(36)]  # ten times the population
    coordinator.clock.advance(LAST_SEEN_RESOLUTION)  # the count of devices seen is per minute

    large = fleet[3].check_in(FACTS)

    assert isinstance(small, RetryWindow) and isinstance(large, RetryWindow)
    # T defaults to lease_seconds / 2 = 50 s before any task has finished.
    assert (small.min + small.max) / 2 == pytest.approx(4 * 50 / 2)
    assert (large.min + large.max) / 2 == pytest.approx(40 * 50 / 2)


def test_a_check_in_that_omits_runtime_facts_keeps_the_registered_ones(coordinator):
    from sqlalchemy import create_engine, text

    from device_sdk.client import CoordinatorClient

    coordinator.create_job(coordinator.publish_plan(), mode="async")
    device = CoordinatorClient(coordinator.url)
    device_id, _ = device.register(runtime="ai_edge_litert", sdk_version="1.2")

    device.check_in(FACTS)  # FACTS carries no runtime or sdk_version

    engine = create_engine(coordinator.db_url)
    with engine.connect() as db:
        row = db.execute(
            text("SELECT runtime, sdk_version FROM devices WHERE id = :d"), {"d": device_id}
        ).one()
    engine.dispose()
    assert tuple(row) == ("ai_edge_litert", "1.2")
