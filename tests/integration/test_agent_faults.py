"""The device agent against a live coordinator through a proxy that drops, delays and refuses.

- connections cut mid-upload and mid-download, answers lost, 503s with ``Retry-After`` and a
  reply slower than the client's timeout: every update still arrives exactly once;
- eligibility lost mid-training: the abort is reported and the slot frees at once;
- the agent, a real process, SIGKILLed while it holds a task, then restarted from its state
  directory: nothing is uploaded twice, and it carries on.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from coordinator.admin_client import AdminClient
from device_sdk.agent import AgentConfig, run
from device_sdk.eligibility import FakeProbe, Readings
from device_sdk.example_store import NpzShardStore
from fedge.protocol import Task
from tests.databases import fresh_database
from tests.integration.conftest import ADMIN_TOKEN, FACTS
from tests.integration.faulty_proxy import FaultyProxy
from tests.integration.fleet import ServerProcess, fleet_job, free_port


def write_examples(directory: Path, now: float, count: int = 50) -> Path:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (count, 60)).astype(np.float32)
    NpzShardStore(directory, now=lambda: now).add(x, rng.integers(0, 10, count))
    return directory


def agent_config(coordinator, url, tmp_path, **overrides) -> AgentConfig:
    clock = coordinator.clock
    settings = {
        "server_url": url,
        "state_dir": tmp_path / "state",
        "data": write_examples(tmp_path / "examples", clock.now()),
        "probe": FakeProbe(Readings(charging=True)),
        "clock": clock,
        "sleep": clock.advance,  # virtual time: backoff and Retry-After cost no real seconds
        "seed": 0,
    }
    return AgentConfig(**(settings | overrides))


def query(db_url: str, sql: str, **params) -> list:
    engine = create_engine(db_url)
    try:
        with engine.connect() as db:
            return list(db.execute(text(sql), params).all())
    finally:
        engine.dispose()


def test_through_drops_503s_and_delays_each_update_arrives_exactly_once(coordinator, tmp_path):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=1)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        coordinator.clock.advance(seconds)

    with FaultyProxy(coordinator.url) as proxy:
        faults = [
            proxy.inject("status", method="POST", path="/check-in$", times=2, retry_after=7),
            proxy.inject("delay", method="POST", path="/check-in$", seconds=0.2),
            proxy.inject("drop_mid_response", method="GET", path="/weights$"),
            proxy.inject("drop_mid_body", method="PUT", path="/update$"),
            proxy.inject("status", method="PUT", path="/update$", retry_after=3),
            proxy.inject("drop_response", method="PUT", path="/update$"),
            proxy.inject("delay", method="PUT", path="/update$", seconds=2.0),  # past the timeout
        ]
        config = agent_config(
            coordinator, proxy.url, tmp_path, sleep=sleep, max_tasks=3, http_timeout_s=1.5
        )
        stats = run(config)
        uploads = [s for s in proxy.requests("PUT", "/update$") if s.fault != "drop_mid_body"]

    assert all(fault.times == 0 for fault in faults), "a fault was never triggered"
    assert stats.uploads_accepted == 3 and stats.aborts == 0
    assert 7 in waits and 3 in waits  # Retry-After honoured as given
    history = coordinator.admin.get(f"/v1/admin/jobs/{job['id']}/metrics").json()
    assert history["current_version"] == 3
    assert sum(v["accepted"] for v in history["versions"]) == 3
    assert history["leases"] == {"completed": 3}
    stored = query(coordinator.db_url, "SELECT lease_id, metrics FROM updates")
    assert len(stored) == len({lease for lease, _ in stored}) == 3  # one update per lease
    sent = {s.path.split("/")[3]: s.body_sha256 for s in uploads}
    for lease, metrics in stored:
        metrics = json.loads(metrics) if isinstance(metrics, str) else metrics
        assert metrics["upload_sha256"] == sent[lease]
    assert Counter(s.path for s in uploads).most_common(1)[0][1] >= 2  # some were sent again
    assert len({(s.path, s.body_sha256) for s in uploads}) == 3  # ...always the same bytes


class UnpluggedAfter(FakeProbe):
    """Charging for the first ``readings`` readings, then unplugged at 10 %."""

    def __init__(self, readings: int) -> None:
        super().__init__(Readings(charging=True))
        self.left = readings

    def snapshot(self):
        self.left -= 1
        if self.left < 0:
            self.update(charging=False, battery_percent=10.0)
        return super().snapshot()


def test_eligibility_lost_mid_training_is_reported_and_the_slot_frees(coordinator, tmp_path):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="async", concurrency=1, task={"local_epochs": 20}
    )
    # Readings: the check-in, before training, before step 1, before step 2 (unplugged).
    config = agent_config(
        coordinator,
        coordinator.url,
        tmp_path,
        probe=UnpluggedAfter(readings=3),
        eligibility_check_s=0.0,
        max_tasks=1,
    )

    stats = run(config)

    assert stats.aborts == 1 and stats.uploads_accepted == 0
    history = coordinator.admin.get(f"/v1/admin/jobs/{job['id']}/metrics").json()
    assert history["leases"] == {"aborted": 1}
    [(reason,)] = query(coordinator.db_url, "SELECT close_reason FROM leases")
    assert reason.endswith("battery")
    assert isinstance(coordinator.device().check_in(FACTS), Task)  # the one slot is free


# --- a real agent process, SIGKILLed mid-task ----------------------------------------------


def start_agent(url: str, tmp_path: Path, *, max_tasks: int) -> subprocess.Popen[bytes]:
    command = [
        *(sys.executable, "-m", "device_sdk.cli", "device", "run"),
        *("--server", url, "--data", str(tmp_path / "examples")),
        *("--state-dir", str(tmp_path / "state"), "--max-tasks", str(max_tasks)),
        *("--probe", "none", "--seed", "0"),
    ]
    with (tmp_path / "agent.log").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def recorded_task(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / "state.json").read_text())["task"]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_an_agent_killed_mid_task_resumes_without_a_duplicate_upload(tmp_path, plans_dir, kind):
    write_examples(tmp_path / "examples", time.time())
    with fresh_database(kind, tmp_path) as db_url:
        server = ServerProcess(db_url, free_port(), tmp_path / "server.log")
        server.start()
        try:
            with (
                fleet_job(server.url, plans_dir, db_url, buffer_size=1) as (live, job, _),
                FaultyProxy(server.url) as proxy,
            ):
                # 1. Killed while downloading the weights: the restart reports the abort.
                proxy.inject("hold_response", method="GET", path="/weights$")
                agent = start_agent(proxy.url, tmp_path, max_tasks=9)
                proxy.wait_for(lambda: proxy.requests("GET", "/weights$"))
                interrupted = recorded_task(tmp_path)
                agent.kill()
                agent.wait(timeout=10)

                # 2. Killed after the server accepted the update, before the device heard.
                proxy.inject("hold_response", method="PUT", path="/update$")
                agent = start_agent(proxy.url, tmp_path, max_tasks=9)
                proxy.wait_for(lambda: proxy.requests("PUT", "/update$"))
                trained = recorded_task(tmp_path)
                agent.kill()
                agent.wait(timeout=10)

                # 3. Restarted: the saved update again, then a new task.
                finished = start_agent(proxy.url, tmp_path, max_tasks=2).wait(timeout=60)
                history = live.admin.get(f"/v1/admin/jobs/{job['id']}/metrics").json()
                uploads = proxy.requests("PUT", "/update$")
        finally:
            server.stop()
        leases = query(db_url, "SELECT id, status, close_reason FROM leases ORDER BY issued_at")
        updates = query(db_url, "SELECT lease_id, metrics FROM updates")

    log = (tmp_path / "agent.log").read_text()
    assert finished == 0, log
    assert interrupted["phase"] == "downloaded" and trained["phase"] == "trained"
    first, second = interrupted["task"]["lease_id"], trained["task"]["lease_id"]
    assert [(lease, status.lower()) for lease, status, _ in leases] == [
        (first, "aborted"),
        (second, "completed"),
        (leases[2][0], "completed"),
    ]
    assert leases[0][2].endswith("other")  # the abort the restart reported
    assert len(updates) == 2 and history["current_version"] == 2  # nothing counted twice
    resent = [s.body_sha256 for s in uploads if s.path == f"/v1/leases/{second}/update"]
    assert resent == [trained["update_sha256"]] * 2  # the same saved bytes, twice
    assert f"resuming lease {second}" in log
    assert recorded_task(tmp_path) is None


# --- a real agent process whose every task fails ---------------------------------------------


def publish_broken_plan(coordinator, directory: Path) -> int:
    """synthetic_logreg with its plan bytes replaced by bytes no runtime can load."""
    directory.mkdir()
    for exported in coordinator.plans_dir.glob("synthetic_logreg*"):
        (directory / exported.name).write_bytes(exported.read_bytes())
    broken = b"these bytes are no TFLite flatbuffer"
    (directory / "synthetic_logreg.tflite").write_bytes(broken)
    manifest = json.loads((directory / "synthetic_logreg.json").read_text())
    manifest |= {"plan_sha256": hashlib.sha256(broken).hexdigest(), "plan_bytes": len(broken)}
    (directory / "synthetic_logreg.json").write_text(json.dumps(manifest))
    with AdminClient(coordinator.url, ADMIN_TOKEN) as admin:
        return int(admin.publish_plan(directory / "synthetic_logreg.tflite")["id"])


def test_an_agent_whose_every_task_failed_exits_1_and_names_the_cause(coordinator, tmp_path):
    coordinator.create_job(publish_broken_plan(coordinator, tmp_path / "plans"), mode="async")
    write_examples(tmp_path / "examples", time.time())

    # One task: a device that reported a plan it cannot run is not leased that plan again.
    finished = start_agent(coordinator.url, tmp_path, max_tasks=1).wait(timeout=60)

    log = (tmp_path / "agent.log").read_text()
    assert finished == 1, log
    assert "(bad_plan: the plan does not expose Fedge's signatures" in log
    assert "every task failed (1): exiting with status 1" in log
    closed = query(coordinator.db_url, "SELECT close_reason, abort_detail FROM leases")
    assert [reason for (reason, _) in closed] == ["aborted:bad_plan"]
    assert closed[0][1].startswith("bad_plan: the plan does not expose Fedge's signatures")
