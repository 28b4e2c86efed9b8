"""Lease heartbeats: a vanished device frees its slot in a few intervals, not a whole lease, and
a device whose round already closed learns it mid-training instead of training for nothing."""

import httpx
import numpy as np
import pytest

from coordinator.config import HEARTBEAT_GRACE
from coordinator.db.session import make_engine, make_session_factory, transaction
from coordinator.services import rounds
from device_sdk.client import CoordinatorClient
from device_sdk.errors import ProtocolError
from device_sdk.runner import LocalRunner
from device_sdk.session import device_session
from fedge.manifest import PlanManifest
from fedge.protocol import EligibilityFacts, RetryWindow, Task
from simulator.datasets import synthetic_fedprox
from tests.integration.conftest import FACTS
from tests.integration.test_async_jobs import small_delta

INTERVAL = 30.0


def async_job(coordinator, **task):
    return coordinator.create_job(
        coordinator.publish_plan(),
        mode="async",
        concurrency=1,
        buffer_size=1,
        task={"lease_seconds": 900, "heartbeat_seconds": INTERVAL, **task},
    )


def sync_job(coordinator):
    """Rounds of one report from two selected devices: the second is cut at the close."""
    return coordinator.create_job(
        coordinator.publish_plan(),
        mode="sync",
        target=1,
        over_selection=2.0,
        task={"heartbeat_seconds": INTERVAL},
    )


def test_a_task_tells_the_device_how_often_to_send_heartbeats(coordinator):
    async_job(coordinator)

    task = coordinator.device().check_in(FACTS)

    assert isinstance(task, Task)
    assert task.heartbeat_seconds == INTERVAL


def test_a_silent_device_frees_its_slot_after_the_grace_intervals_not_the_whole_lease(
    coordinator,
):
    async_job(coordinator)
    vanished, waiting = coordinator.device(), coordinator.device()
    lost_task = vanished.check_in(FACTS)
    assert isinstance(waiting.check_in(FACTS), RetryWindow)

    coordinator.clock.advance(HEARTBEAT_GRACE * INTERVAL + 1)  # far inside the 900 s lease

    assert isinstance(waiting.check_in(FACTS), Task)
    with pytest.raises(ProtocolError) as late:
        vanished.upload(lost_task, small_delta(), num_examples=10)
    assert late.value.status == 409 and "expired" in late.value.message


def test_a_silent_devices_late_upload_is_refused_even_before_anything_sweeps(coordinator):
    job = async_job(coordinator)
    vanished = coordinator.device()
    lost_task = vanished.check_in(FACTS)
    coordinator.clock.advance(HEARTBEAT_GRACE * INTERVAL + 1)  # no check-in, no sweep since

    with pytest.raises(ProtocolError) as late:
        vanished.upload(lost_task, small_delta(), num_examples=10)

    assert late.value.status == 409
    assert "went silent" in late.value.message
    assert coordinator.job(job["id"])["current_version"] == 0


def test_a_device_back_after_going_silent_gets_a_fresh_task_not_its_dead_lease(coordinator):
    async_job(coordinator)
    device = coordinator.device()
    first = device.check_in(FACTS)
    assert isinstance(first, Task)
    coordinator.clock.advance(HEARTBEAT_GRACE * INTERVAL + 1)

    again = device.check_in(FACTS)

    assert isinstance(again, Task)
    assert again.lease_id != first.lease_id
    assert device.heartbeat(again) > coordinator.clock.now()


def test_heartbeats_keep_a_slow_devices_lease_alive_until_it_uploads(coordinator):
    job = async_job(coordinator, lease_seconds=3600)
    slow, waiting = coordinator.device(), coordinator.device()
    task = slow.check_in(FACTS)
    assert isinstance(task, Task)

    for _ in range(10):  # 10 intervals of training: longer than the grace, shorter than the lease
        coordinator.clock.advance(INTERVAL)
        alive_until = slow.heartbeat(task)
        assert alive_until == pytest.approx(coordinator.clock.now() + HEARTBEAT_GRACE * INTERVAL)
        assert isinstance(waiting.check_in(FACTS), RetryWindow)  # the slot stays taken

    receipt = slow.upload(task, small_delta(), num_examples=10)

    assert receipt.status == "accepted"
    assert coordinator.job(job["id"])["current_version"] == 1


def test_a_heartbeat_on_an_expired_lease_tells_the_device_to_stop(coordinator):
    async_job(coordinator)
    device = coordinator.device()
    task = device.check_in(FACTS)
    coordinator.clock.advance(HEARTBEAT_GRACE * INTERVAL + 1)

    with pytest.raises(ProtocolError) as stop:
        device.heartbeat(task)

    assert stop.value.status == 409
    assert stop.value.reason == "lease_closed"
    assert "stop working" in stop.value.message


def test_a_heartbeat_for_another_devices_lease_is_forbidden(coordinator):
    async_job(coordinator)
    owner, intruder = coordinator.device(), coordinator.device()
    task = owner.check_in(FACTS)

    with pytest.raises(ProtocolError) as refused:
        intruder.heartbeat(task)

    assert refused.value.status == 403
    assert owner.heartbeat(task) > coordinator.clock.now()  # the owner's lease is untouched


def test_a_device_cut_when_its_round_reached_the_target_learns_it_at_its_next_heartbeat(
    coordinator,
):
    job = sync_job(coordinator)
    fast, slow = coordinator.device(), coordinator.device()
    fast_task, slow_task = fast.check_in(FACTS), slow.check_in(FACTS)
    assert isinstance(fast_task, Task) and isinstance(slow_task, Task)
    assert slow.heartbeat(slow_task) > coordinator.clock.now()

    fast.upload(fast_task, small_delta(), num_examples=10)  # the target: round 1 closes

    with pytest.raises(ProtocolError) as stop:
        slow.heartbeat(slow_task)
    assert stop.value.status == 409 and "round_closed" in stop.value.message
    assert coordinator.job(job["id"])["current_version"] == 1


def test_the_round_planner_counts_a_device_gone_silent_as_a_dropout_not_a_slow_device(
    coordinator,
):
    job = sync_job(coordinator)
    working, vanished = coordinator.device(), coordinator.device()
    task = working.check_in(FACTS)
    assert isinstance(vanished.check_in(FACTS), Task)
    for _ in range(HEARTBEAT_GRACE + 1):  # the vanished device misses its grace meanwhile
        coordinator.clock.advance(INTERVAL)
        working.heartbeat(task)
    working.upload(task, small_delta(), num_examples=10)  # the target: round 1 closes

    engine = make_engine(coordinator.db_url)
    try:
        with transaction(make_session_factory(engine), read_only=True) as session:
            seen = rounds.history(session, job["id"], now=coordinator.clock.now(), heartbeats=True)
    finally:
        engine.dispose()

    assert seen.report_seconds == [pytest.approx((HEARTBEAT_GRACE + 1) * INTERVAL)]
    assert seen.aborted == 1  # a known dropout, not a device censored at the close
    assert seen.censored_seconds == []


def test_without_heartbeats_configured_a_lease_lives_until_its_deadline(coordinator):
    coordinator.create_job(
        coordinator.publish_plan(), mode="async", concurrency=1, task={"lease_seconds": 900}
    )
    device, waiting = coordinator.device(), coordinator.device()
    task = device.check_in(FACTS)
    assert isinstance(task, Task) and task.heartbeat_seconds is None

    coordinator.clock.advance(600)  # silent, but within the lease

    assert isinstance(waiting.check_in(FACTS), RetryWindow)
    assert device.heartbeat(task) == pytest.approx(task.deadline)  # accepted, nothing to renew


class CountingTransport(httpx.HTTPTransport):
    def __init__(self):
        super().__init__()
        self.heartbeats = 0

    def handle_request(self, request):
        self.heartbeats += request.url.path.endswith("/heartbeat")
        return super().handle_request(request)


def runner_for(coordinator, client, monotonic):
    manifest = PlanManifest.from_json((coordinator.plans_dir / "synthetic_logreg.json").read_text())
    (local,) = synthetic_fedprox(alpha=0.5, beta=0.5, num_devices=1, rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    runner = LocalRunner(
        client,
        manifest_for=lambda _sha: manifest,
        x=local.x,
        y=local.y,
        rng=rng,
        sleep=coordinator.clock.advance,
        monotonic=monotonic,
    )
    session = device_session(
        lambda: EligibilityFacts(num_examples=len(local)),
        rng=rng,
        now=coordinator.clock.now,
        max_tasks=1,
    )
    return runner, session


def test_a_device_sends_heartbeats_while_it_trains_and_its_update_counts(coordinator):
    job = async_job(coordinator)
    transport = CountingTransport()
    client = CoordinatorClient(coordinator.url, transport=transport)
    client.register(runtime="test")
    steps = iter(range(10_000))
    runner, session = runner_for(coordinator, client, lambda: next(steps) * INTERVAL / 2)

    stats = runner.run(session)

    assert stats.uploads_accepted == 1
    assert transport.heartbeats > 2  # one as training starts, then one every other step
    assert coordinator.job(job["id"])["current_version"] == 1


def test_a_device_stops_training_once_its_round_closes_and_uploads_nothing(coordinator):
    job = sync_job(coordinator)
    fast = coordinator.device()
    fast_task = fast.check_in(FACTS)
    slow = CoordinatorClient(coordinator.url)
    slow.register(runtime="test")
    calls = iter(range(10_000))

    def monotonic():
        call = next(calls)
        if call == 3:  # mid-training, the fast device reports: the round has its target
            fast.upload(fast_task, small_delta(), num_examples=10)
        return call * INTERVAL

    runner, session = runner_for(coordinator, slow, monotonic)

    stats = runner.run(session)

    assert (stats.uploads_accepted, stats.uploads_refused, stats.aborts) == (0, 1, 0)
    metrics = coordinator.admin.get(f"/v1/admin/jobs/{job['id']}/metrics").json()
    assert sum(v["accepted"] for v in metrics["versions"]) == 1  # the fast device's alone
