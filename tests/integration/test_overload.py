"""Overload without loss: a real coordinator (uvicorn, SQLite, the system clock, its own sweep)
with a tiny shedding threshold, and many scripted devices hammering it from threads.

New check-ins are shed (503 ``overloaded`` with ``Retry-After``); nothing else answers 5xx; no
device that kept heartbeating has its heartbeat or its finished upload refused; versions come.
No timed asserts: the devices stop after a number of tasks, and only outcomes are checked.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from coordinator.api.app import create_app
from coordinator.config import JobCreate
from coordinator.db.migrate import upgrade
from coordinator.db.session import transaction
from coordinator.services import jobs
from coordinator.settings import Settings
from fedge import protocol
from fedge.protocol import Reason
from fedge.wire import MEDIA_TYPE
from tests.coordinator.services.world import delta, register_tiny_plan
from tests.databases import fresh_database
from tests.integration.conftest import ADMIN_TOKEN, serve

DEVICES = 24
TASKS_EACH = 2
MAX_CHECK_INS = 400  # per device: a bound on the loop, not a figure the test asserts
HEARTBEATS_PER_TASK = 3
BUFFER_SIZE = 4


@dataclass
class Answer:
    """One request a scripted device made and what came back."""

    kind: str  # check_in, heartbeat, upload
    status: int
    reason: str | None
    retry_after: str | None


@dataclass
class Device:
    """A scripted device: check in until given a task, heartbeat, upload; twice."""

    url: str
    seed: int
    answers: list[Answer] = field(default_factory=list)
    accepted: int = 0

    def run(self) -> None:
        rng = random.Random(self.seed)
        with httpx.Client(base_url=self.url, timeout=120) as http:
            token = http.post(protocol.REGISTER, json={"runtime": "test"}).json()["token"]
            http.headers["Authorization"] = f"Bearer {token}"
            for _ in range(MAX_CHECK_INS):
                if self.accepted == TASKS_EACH:
                    return
                task = self.check_in(http)
                if task is None:
                    threading.Event().wait(rng.uniform(0.0, 0.05))  # back at once: pressure
                    continue
                self.work(http, task, rng)

    def check_in(self, http: httpx.Client) -> dict[str, object] | None:
        response = http.post(protocol.CHECK_IN, json={"num_examples": 50})
        self.record("check_in", response)
        if response.status_code != 200:
            return None
        task: dict[str, object] | None = response.json()["task"]
        return task

    def work(self, http: httpx.Client, task: dict[str, object], rng: random.Random) -> None:
        lease = str(task["lease_id"])
        for _ in range(HEARTBEATS_PER_TASK):
            threading.Event().wait(rng.uniform(0.0, 0.05))
            beat = http.post(protocol.HEARTBEAT.format(lease_id=lease))
            self.record("heartbeat", beat)
            if beat.status_code != 200:
                return
        upload = http.put(
            protocol.UPDATE.format(lease_id=lease),
            content=delta(0.01),
            headers={
                "Content-Type": MEDIA_TYPE,
                protocol.HEADER_BASE_VERSION: str(task["global_version"]),
                protocol.HEADER_NUM_EXAMPLES: "10",
            },
        )
        self.record("upload", upload)
        if upload.status_code == 200:
            self.accepted += 1

    def record(self, kind: str, response: httpx.Response) -> None:
        try:
            reason = str(response.json().get("error")) if response.status_code >= 400 else None
        except ValueError:
            reason = "not json"
        self.answers.append(
            Answer(kind, response.status_code, reason, response.headers.get("Retry-After"))
        )


@pytest.fixture
def overloaded(tmp_path: Path):
    """A served coordinator that sheds check-ins above 2 requests in flight, with one job."""
    with fresh_database("sqlite", tmp_path) as db_url:
        settings = Settings(
            db_url=db_url,
            admin_token=ADMIN_TOKEN,
            shed_check_ins_above=2,
            shed_retry_after_seconds=1.0,
            retry_min_seconds=0.05,
            retry_max_seconds=0.2,
            expiry_sweep_seconds=0.1,
            rate_limit_per_minute=1_000_000,
        )
        app = create_app(settings)
        upgrade(app.state.engine)
        with transaction(app.state.sessions) as session:
            plan = register_tiny_plan(session, now=app.state.clock.now())
            request = JobCreate.model_validate(
                {
                    "name": "overload",
                    "plan_id": plan.id,
                    "aggregation": {
                        "mode": "async",
                        "concurrency": 8,
                        "buffer_size": BUFFER_SIZE,
                        "max_staleness": 1000,
                    },
                    "task": {"lease_seconds": 600, "heartbeat_seconds": 5.0},
                }
            )
            job_id = jobs.create_job(session, request, now=app.state.clock.now()).id
        server, thread, url = serve(app)
        try:
            yield url, job_id
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            app.state.engine.dispose()


def test_an_overloaded_coordinator_sheds_check_ins_and_loses_no_finished_work(overloaded):
    url, job_id = overloaded
    devices = [Device(url, seed) for seed in range(DEVICES)]
    threads = [threading.Thread(target=device.run) for device in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    answers = [answer for device in devices for answer in device.answers]
    by_kind = Counter((a.kind, a.status) for a in answers)
    shed = [a for a in answers if a.status == 503]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        job = admin.get(f"/v1/admin/jobs/{job_id}").json()
        metrics = admin.get("/metrics").text

    assert shed, f"nothing was shed: {by_kind}"  # the scenario is an overload
    assert all(a.kind == "check_in" and a.reason == Reason.OVERLOADED for a in shed), by_kind
    assert all(a.retry_after is not None and a.retry_after.isdigit() for a in shed)
    assert [a for a in answers if a.status >= 500 and a.status != 503] == []
    # A device that kept heartbeating never lost its lease, nor its finished upload.
    assert [a for a in answers if a.kind != "check_in" and a.status != 200] == []
    assert sum(device.accepted for device in devices) == DEVICES * TASKS_EACH
    assert job["current_version"] == DEVICES * TASKS_EACH // BUFFER_SIZE
    assert f"fedge_check_ins_shed_total {float(len(shed))}" in metrics
