"""A stopped or finished job's model never moves again: its open leases close, uploads are refused.

The state lives in the database (the job's row, its leases' status), so it holds across workers
sharing one database and across a SIGKILL and restart.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from coordinator.admin_client import AdminClient
from coordinator.api.app import create_app
from coordinator.db.models import Lease, LeaseStatus
from coordinator.db.session import make_engine, make_session_factory, transaction
from coordinator.settings import Settings
from device_sdk.client import CoordinatorClient
from device_sdk.errors import ProtocolError
from fedge.clock import ManualClock
from fedge.protocol import Task
from tests.databases import fresh_database
from tests.integration.conftest import ADMIN_TOKEN, FACTS, serve
from tests.integration.fleet import ServerProcess, free_port
from tests.integration.test_async_jobs import small_delta


def one_task(coordinator, **aggregation):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async", **aggregation)
    device = coordinator.device()
    task = device.check_in(FACTS)
    assert isinstance(task, Task)
    return job, device, task


def stop(url: str, job_id: int) -> None:
    with AdminClient(url, ADMIN_TOKEN) as admin:
        admin.change_status(job_id, "stop")


def test_upload_after_stop_is_refused_and_the_model_is_unchanged(coordinator):
    job, device, task = one_task(coordinator, buffer_size=1)
    stop(coordinator.url, job["id"])

    with pytest.raises(ProtocolError) as refused:
        device.upload(task, small_delta(), num_examples=10)

    assert refused.value.status == 409
    assert refused.value.reason == "lease_closed"
    assert "job stopped" in refused.value.message
    assert [v["number"] for v in coordinator.versions(job["id"])] == [0]


def test_heartbeat_after_stop_tells_the_device_to_stop_working(coordinator):
    job, device, task = one_task(coordinator, task={"heartbeat_seconds": 30})
    stop(coordinator.url, job["id"])

    with pytest.raises(ProtocolError) as refused:
        device.heartbeat(task)

    assert refused.value.status == 409
    assert refused.value.reason == "lease_closed"
    assert "job stopped" in refused.value.message


def test_a_lease_issued_while_the_job_was_stopping_is_refused_and_closed(coordinator):
    job, device, task = one_task(coordinator, buffer_size=1)
    stop(coordinator.url, job["id"])
    engine = make_engine(coordinator.db_url)
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:  # as if a check-in committed just after the stop
        lease = session.get_one(Lease, task.lease_id)
        lease.status, lease.close_reason, lease.closed_at = LeaseStatus.ACTIVE, None, None

    with pytest.raises(ProtocolError) as refused:
        device.upload(task, small_delta(), num_examples=10)
    with transaction(sessions) as session:
        closed = session.get_one(Lease, task.lease_id)
        status, reason = closed.status, closed.close_reason
    engine.dispose()

    assert (refused.value.status, refused.value.reason) == (409, "lease_closed")
    assert "job stopped" in refused.value.message
    assert (status, reason) == (LeaseStatus.REJECTED, "job stopped")
    assert [v["number"] for v in coordinator.versions(job["id"])] == [0]


def test_a_sync_jobs_report_after_stop_is_refused(coordinator):
    job = coordinator.create_job(coordinator.publish_plan(), mode="sync", target=1)
    device = coordinator.device()
    task = device.check_in(FACTS)
    assert isinstance(task, Task)
    stop(coordinator.url, job["id"])

    with pytest.raises(ProtocolError) as refused:
        device.upload(task, small_delta(), num_examples=10)

    assert (refused.value.status, refused.value.reason) == (409, "lease_closed")
    assert [v["number"] for v in coordinator.versions(job["id"])] == [0]


def test_upload_after_max_versions_is_refused_and_makes_no_further_version(coordinator):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="async", concurrency=2, buffer_size=1, max_versions=1
    )
    first, late = coordinator.device(), coordinator.device()
    first_task, late_task = first.check_in(FACTS), late.check_in(FACTS)
    first.upload(first_task, small_delta(), num_examples=10)  # version 1: the job is finished

    with pytest.raises(ProtocolError) as refused:
        late.upload(late_task, small_delta(), num_examples=10)

    assert (refused.value.status, refused.value.reason) == (409, "lease_closed")
    assert "job finished" in refused.value.message
    assert coordinator.job(job["id"])["status"] == "stopped"
    assert [v["number"] for v in coordinator.versions(job["id"])] == [0, 1]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_workers_racing_uploads_never_publish_past_max_versions(tmp_path, plans_dir, kind):
    with fresh_database(kind, tmp_path) as db_url:
        settings = Settings(db_url=db_url, admin_token=ADMIN_TOKEN, max_body_bytes=1_000_000)
        apps = [create_app(settings, clock=ManualClock(), background_sweep=False) for _ in "ab"]
        servers = [serve(app) for app in apps]
        try:
            urls = [url for _, _, url in servers]
            with AdminClient(urls[0], ADMIN_TOKEN) as admin:
                plan = admin.publish_plan(plans_dir / "synthetic_logreg.tflite")
                job = admin.create_job(
                    {
                        "name": "race",
                        "plan_id": plan["id"],
                        "aggregation": {"mode": "async", "concurrency": 8, "buffer_size": 1},
                        "max_versions": 2,
                    }
                )
            devices = [CoordinatorClient(urls[i % 2]) for i in range(8)]
            tasks = []
            for device in devices:
                device.register(runtime="test")
                tasks.append(device.check_in(FACTS))
            assert all(isinstance(task, Task) for task in tasks)

            def attempt(i: int) -> int:
                try:  # distinct bytes: identical ones would race on one blob row
                    devices[i].upload(tasks[i], small_delta(0.01 * (i + 1)), num_examples=10)
                except ProtocolError as error:
                    return error.status
                return 200

            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(attempt, range(8)))
            with AdminClient(urls[1], ADMIN_TOKEN) as admin:
                numbers = [v["number"] for v in admin.versions(job["id"])]
        finally:
            for server, thread, _ in servers:
                server.should_exit = True
                thread.join(timeout=10)
            for app in apps:
                app.state.engine.dispose()

    assert numbers == [0, 1, 2]
    assert sorted(statuses) == [200, 200] + [409] * 6


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_server_killed_after_stop_still_refuses_the_upload_when_restarted(
    tmp_path: Path, plans_dir: Path, kind: str
):
    with fresh_database(kind, tmp_path) as db_url:
        server = ServerProcess(db_url, free_port(), tmp_path / "server.log")
        server.start()
        try:
            with AdminClient(server.url, ADMIN_TOKEN) as admin:
                plan = admin.publish_plan(plans_dir / "synthetic_logreg.tflite")
                job = admin.create_job(
                    {"name": "kill", "plan_id": plan["id"], "aggregation": {"buffer_size": 1}}
                )
            device = CoordinatorClient(server.url)
            device.register(runtime="test")
            task = device.check_in(FACTS)
            assert isinstance(task, Task)
            stop(server.url, job["id"])
            server.kill()
            server.start()

            with pytest.raises(ProtocolError) as refused:
                device.upload(task, small_delta(), num_examples=10)
            versions = httpx.get(
                f"{server.url}/v1/admin/jobs/{job['id']}/versions",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ).json()
        finally:
            server.stop()

    assert (refused.value.status, refused.value.reason) == (409, "lease_closed")
    assert "job stopped" in refused.value.message
    assert [v["number"] for v in versions] == [0]


def test_a_sync_job_finished_by_its_last_round_refuses_the_cut_devices_report(coordinator):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="sync", target=1, over_selection=2.0, max_versions=1
    )
    first, cut = coordinator.device(), coordinator.device()
    first_task, cut_task = first.check_in(FACTS), cut.check_in(FACTS)
    assert isinstance(first_task, Task) and isinstance(cut_task, Task)
    first.upload(first_task, small_delta(), num_examples=10)  # round 1 → version 1: finished

    with pytest.raises(ProtocolError) as refused:
        cut.upload(cut_task, small_delta(0.02), num_examples=10)

    assert (refused.value.status, refused.value.reason) == (409, "lease_closed")
    assert "job finished" in refused.value.message
    assert coordinator.job(job["id"])["status"] == "stopped"
    assert [v["number"] for v in coordinator.versions(job["id"])] == [0, 1]
