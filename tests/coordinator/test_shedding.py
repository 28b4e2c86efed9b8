"""Admission control under overload: new check-ins are shed first, a working device's requests
never are, and the time a request waits in the server is not charged to its lease.

The app is the real one (``create_app`` on SQLite, a manual clock) behind httpx's ASGI
transport; a full backlog is made by entering requests into it, and a queue by an offload that
advances the clock before it runs a request's work.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from coordinator.api import deps
from coordinator.api.app import create_app
from coordinator.api.offload import Offload
from coordinator.api.shedding import AdmissionControl, Backlog, Kind, kind_of
from coordinator.config import HEARTBEAT_GRACE, JobCreate
from coordinator.db.migrate import upgrade
from coordinator.db.session import transaction
from coordinator.services import jobs
from coordinator.settings import Settings
from fedge import protocol
from fedge.clock import ManualClock
from fedge.protocol import Reason
from fedge.wire import MEDIA_TYPE
from tests.coordinator.services.world import delta, register_tiny_plan

P = ParamSpec("P")
T = TypeVar("T")

INTERVAL = 10.0
GRACE = HEARTBEAT_GRACE * INTERVAL
LIMIT = 3
RETRY_AFTER = 7.0


# --- what a request is ---------------------------------------------------------------------


def test_a_check_in_asks_for_new_work():
    assert kind_of("POST", protocol.CHECK_IN) is Kind.CHECK_IN


def test_heartbeats_uploads_aborts_and_evaluation_reports_are_a_working_devices():
    lease = "3f2a"
    assert kind_of("POST", protocol.HEARTBEAT.format(lease_id=lease)) is Kind.WORKING
    assert kind_of("PUT", protocol.UPDATE.format(lease_id=lease)) is Kind.WORKING
    assert kind_of("POST", protocol.ABORT.format(lease_id=lease)) is Kind.WORKING
    assert kind_of("POST", protocol.EVALUATION.format(lease_id=lease)) is Kind.WORKING


def test_registration_downloads_and_operations_are_neither():
    assert kind_of("POST", protocol.REGISTER) is Kind.OTHER
    assert kind_of("GET", protocol.PLAN.format(plan_sha256="ab")) is Kind.OTHER
    assert kind_of("GET", "/metrics") is Kind.OTHER


# --- the backlog ---------------------------------------------------------------------------


def test_the_backlog_counts_requests_until_they_leave():
    backlog = Backlog()
    first = backlog.enter(Kind.CHECK_IN, 1.0)
    backlog.enter(Kind.WORKING, 2.0)

    backlog.leave(first)

    assert backlog.in_flight == 1


def test_the_sweeps_slack_is_the_age_of_the_oldest_working_request_in_flight():
    backlog = Backlog()
    backlog.enter(Kind.CHECK_IN, 100.0)  # a check-in keeps no lease alive
    oldest = backlog.enter(Kind.WORKING, 130.0)
    backlog.enter(Kind.WORKING, 150.0)

    assert backlog.slack(160.0) == 30.0
    backlog.leave(oldest)
    assert backlog.slack(160.0) == 10.0


def test_no_working_request_in_flight_gives_no_slack():
    backlog = Backlog()
    backlog.enter(Kind.CHECK_IN, 100.0)

    assert backlog.slack(160.0) == 0.0


# --- the app: shedding ---------------------------------------------------------------------


class QueuedOffload(Offload):
    """Runs a request's work inline after it 'waited' ``seconds`` for a worker thread."""

    def __init__(self, clock: ManualClock, seconds: float) -> None:
        super().__init__(inline=True)
        self.clock = clock
        self.seconds = seconds

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        self.clock.advance(self.seconds)
        return await super().__call__(fn, *args, **kwargs)

    async def priority(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        self.clock.advance(self.seconds)
        return await super().priority(fn, *args, **kwargs)


def queue(app: FastAPI, clock: ManualClock, seconds: float) -> None:
    """From now on each request waits ``seconds`` before its handler runs, and again for a thread.

    The first wait is the event loop's backlog (the dependencies resolve late), the second the
    threadpool's: between them every clock read of a handler comes after the request arrived.
    """
    queued = QueuedOffload(clock, seconds)

    async def late_offload() -> Offload:
        clock.advance(seconds)
        return queued

    app.dependency_overrides[deps._offload] = late_offload


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(tmp_path: Path, clock: ManualClock) -> Iterator[FastAPI]:
    """The coordinator on a fresh SQLite file, shedding above LIMIT, with one running job."""
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'coordinator.db'}",
        admin_token="shedding-spec-admin-token",
        shed_check_ins_above=LIMIT,
        shed_retry_after_seconds=RETRY_AFTER,
    )
    app = create_app(settings, clock=clock, background_sweep=False, inline_blocking=True)
    upgrade(app.state.engine)
    with transaction(app.state.sessions) as session:
        plan = register_tiny_plan(session, now=clock.now())
        request = JobCreate.model_validate(
            {
                "name": "overload spec",
                "plan_id": plan.id,
                "aggregation": {"mode": "async", "concurrency": 10, "buffer_size": 10},
                "task": {"lease_seconds": 900, "heartbeat_seconds": INTERVAL},
            }
        )
        jobs.create_job(session, request, now=clock.now())
    yield app
    app.state.engine.dispose()


def run(app: FastAPI, script: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as http:
            return await script(http)

    return asyncio.run(main())


async def registered(http: httpx.AsyncClient) -> dict[str, str]:
    answer = await http.post(protocol.REGISTER, json={"runtime": "test"})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


async def check_in(http: httpx.AsyncClient, auth: dict[str, str]) -> httpx.Response:
    return await http.post(protocol.CHECK_IN, json={"num_examples": 50}, headers=auth)


def fill(app: FastAPI, kind: Kind = Kind.WORKING, count: int = LIMIT) -> None:
    """``count`` requests in flight, as if still being served."""
    backlog: Backlog = app.state.backlog
    for _ in range(count):
        backlog.enter(kind, 0.0)


def test_a_check_in_below_the_threshold_is_served(app: FastAPI):
    async def script(http: httpx.AsyncClient) -> httpx.Response:
        return await check_in(http, await registered(http))

    fill(app, count=LIMIT - 1)  # with the check-in itself: LIMIT in flight

    answer = run(app, script)

    assert answer.status_code == 200
    assert answer.json()["task"] is not None


def test_a_check_in_at_the_threshold_is_shed_with_503_overloaded_and_retry_after(app: FastAPI):
    async def script(http: httpx.AsyncClient) -> httpx.Response:
        auth = await registered(http)
        fill(app)
        return await check_in(http, auth)

    answer = run(app, script)

    assert answer.status_code == 503
    assert answer.json()["error"] == Reason.OVERLOADED
    assert RETRY_AFTER <= int(answer.headers["Retry-After"]) <= 2 * RETRY_AFTER


def test_shed_check_ins_are_counted_in_the_metrics(app: FastAPI):
    async def script(http: httpx.AsyncClient) -> str:
        auth = await registered(http)
        fill(app)
        for _ in range(2):
            await check_in(http, auth)
        return (await http.get("/metrics")).text

    metrics = run(app, script)

    assert "fedge_check_ins_shed_total 2.0" in metrics


def test_a_heartbeat_is_never_shed_however_full_the_backlog(app: FastAPI):
    async def script(http: httpx.AsyncClient) -> httpx.Response:
        auth = await registered(http)
        lease = (await check_in(http, auth)).json()["task"]["lease_id"]
        fill(app, count=10 * LIMIT)
        return await http.post(protocol.HEARTBEAT.format(lease_id=lease), headers=auth)

    answer = run(app, script)

    assert answer.status_code == 200


def test_shed_retry_afters_are_spread_so_the_shed_devices_do_not_return_together():
    backlog = Backlog()
    for _ in range(LIMIT):
        backlog.enter(Kind.WORKING, 0.0)
    control = AdmissionControl(
        None,
        clock=ManualClock(),
        backlog=backlog,
        limit=LIMIT,
        retry_after=RETRY_AFTER,
        registry=CollectorRegistry(),
        rng=random.Random(7),
    )
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def shed_twenty() -> None:
        for _ in range(20):
            scope = {"type": "http", "method": "POST", "path": protocol.CHECK_IN}
            await control(scope, None, send)

    asyncio.run(shed_twenty())

    waits = {dict(m["headers"])[b"retry-after"] for m in sent if m["type"].endswith("start")}
    assert len(waits) > 1


# --- the app: liveness at arrival ----------------------------------------------------------


def test_a_heartbeat_that_waited_in_the_server_past_its_grace_keeps_its_lease(
    app: FastAPI, clock: ManualClock
):
    async def script(http: httpx.AsyncClient) -> httpx.Response:
        auth = await registered(http)
        lease = (await check_in(http, auth)).json()["task"]["lease_id"]
        clock.advance(GRACE - 1)  # the device beats just inside its grace...
        arrived = clock.now()
        queue(app, clock, seconds=5)  # ...and waits 5 s in the server, twice
        answer = await http.post(protocol.HEARTBEAT.format(lease_id=lease), headers=auth)
        assert answer.json()["alive_until"] == arrived + GRACE  # renewed from its arrival
        return answer

    assert run(app, script).status_code == 200


def test_an_upload_that_waited_in_the_server_past_its_grace_is_accepted(
    app: FastAPI, clock: ManualClock
):
    async def script(http: httpx.AsyncClient) -> httpx.Response:
        auth = await registered(http)
        task = (await check_in(http, auth)).json()["task"]
        clock.advance(GRACE - 1)
        queue(app, clock, seconds=5)
        return await http.put(
            protocol.UPDATE.format(lease_id=task["lease_id"]),
            content=delta(0.1),
            headers={
                **auth,
                "Content-Type": MEDIA_TYPE,
                protocol.HEADER_BASE_VERSION: str(task["global_version"]),
                protocol.HEADER_NUM_EXAMPLES: "10",
            },
        )

    answer = run(app, script)

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "accepted"


def test_a_heartbeat_that_arrived_after_its_grace_is_still_refused(
    app: FastAPI, clock: ManualClock
):
    async def script(http: httpx.AsyncClient) -> httpx.Response:
        auth = await registered(http)
        lease = (await check_in(http, auth)).json()["task"]["lease_id"]
        clock.advance(GRACE + 1)
        return await http.post(protocol.HEARTBEAT.format(lease_id=lease), headers=auth)

    answer = run(app, script)

    assert answer.status_code == 409
    assert answer.json()["error"] == Reason.LEASE_CLOSED
