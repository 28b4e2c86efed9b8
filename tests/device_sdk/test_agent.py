"""The device agent against an in-memory coordinator: registration, resuming, budgets, caching."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import stat
import threading
from dataclasses import dataclass, field, replace

import httpx
import numpy as np
import pytest

from device_sdk.agent import Agent, AgentConfig, run
from device_sdk.cli import add_commands
from device_sdk.downloads import BlobDownloader
from device_sdk.eligibility import FakeProbe, Readings
from device_sdk.example_store import (
    ExampleStore,
    ExampleStoreError,
    NpzShardStore,
    open_examples,
)
from device_sdk.runner import describe_plan
from device_sdk.session import Failure
from device_sdk.state import AgentState, StateStore
from fedge.clock import ManualClock
from fedge.errors import ManifestError
from fedge.manifest import PlanManifest
from fedge.protocol import HyperParameters, Task
from fedge.wire import encode_vector

SERVER = "http://coordinator.test"
UNPLUGGED = {"charging": False, "battery_percent": 10.0}


@dataclass
class FakeCoordinator:
    """The device protocol in memory, enough of it to drive an agent (``httpx.MockTransport``)."""

    plan: bytes
    weights: bytes
    clock: ManualClock
    epochs: int = 1
    tokens: dict[str, str] = field(default_factory=dict)  # token -> device id
    leases: dict[str, str] = field(default_factory=dict)  # lease id -> device id
    requests: list[tuple[str, str]] = field(default_factory=list)
    uploads: list[tuple[str, str]] = field(default_factory=list)  # lease id, sha256 of the body
    aborts: list[tuple[str, str]] = field(default_factory=list)  # lease id, reason
    abort_details: list[str] = field(default_factory=list)
    retry: dict[str, object] | None = None  # answer check-ins with this retry window instead
    issued: int = 0

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, path in self.requests if m == method and path.startswith(prefix))

    def task(self, lease_id: str, device_id: str) -> Task:
        self.leases[lease_id] = device_id
        return Task(
            lease_id=lease_id,
            job_id=1,
            plan_sha256=hashlib.sha256(self.plan).hexdigest(),
            plan_url=f"/v1/plans/{hashlib.sha256(self.plan).hexdigest()}",
            global_version=0,
            weights_url="/v1/jobs/1/versions/0/weights",
            weights_sha256=hashlib.sha256(self.weights).hexdigest(),
            hparams=HyperParameters(
                local_epochs=self.epochs, batch_size=10, learning_rate=0.1, momentum=0.0, mu=0.0
            ),
            deadline=self.clock.now() + 600,
            round=None,
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        self.requests.append((method, path))
        if (method, path) == ("POST", "/v1/devices"):
            device_id = f"device-{len(self.tokens) + 1}"
            token = f"token-{device_id}"
            self.tokens[token] = device_id
            return httpx.Response(201, json={"device_id": device_id, "token": token})
        device = self.tokens.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
        if device is None:
            return httpx.Response(401, json={"error": "unauthorized", "message": "unknown token"})
        if path == "/v1/check-in" and self.retry is not None:
            return httpx.Response(200, json={"retry": self.retry})
        if path == "/v1/check-in":
            self.issued += 1
            task = self.task(f"lease-{self.issued}", device)
            return httpx.Response(
                200, json={"task": task.__dict__ | {"hparams": vars(task.hparams)}}
            )
        if path.startswith("/v1/plans/"):
            return httpx.Response(200, content=self.plan)
        if path.endswith("/weights"):
            return httpx.Response(200, content=self.weights)
        lease = path.split("/")[3]
        if path.endswith("/update"):
            self.uploads.append((lease, hashlib.sha256(request.content).hexdigest()))
            repeat = sum(1 for done, _ in self.uploads if done == lease) > 1
            return httpx.Response(
                200,
                json={
                    "status": "already_accepted" if repeat else "accepted",
                    "lease_id": lease,
                    "global_version": 1,
                    "staleness": 0,
                    "clipped": False,
                },
            )
        body = json.loads(request.content)
        self.aborts.append((lease, body["reason"]))
        self.abort_details.append(body["detail"])
        return httpx.Response(204)


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def server(plans_dir, clock):
    return FakeCoordinator(
        plan=(plans_dir / "synthetic_logreg.tflite").read_bytes(),
        weights=(plans_dir / "synthetic_logreg.weights").read_bytes(),
        clock=clock,
    )


@pytest.fixture
def examples(tmp_path, clock):
    rng = np.random.default_rng(0)
    shards = tmp_path / "examples"
    NpzShardStore(shards, now=clock.now).add(
        rng.normal(0, 1, (40, 60)).astype(np.float32), rng.integers(0, 10, 40)
    )
    return shards


def config(server, clock, tmp_path, examples, **overrides):
    settings = {
        "server_url": SERVER,
        "state_dir": tmp_path / "state",
        "data": examples,
        "probe": FakeProbe(Readings(charging=True)),
        "clock": clock,
        "sleep": clock.advance,
        "seed": 0,
        "eligibility_check_s": 0.0,
        "transport": server.transport if server is not None else None,
        "max_tasks": 1,
    }
    return AgentConfig(**(settings | overrides))


def recorded(tmp_path, server, device="device-1", *, phase):
    """A state directory as a crash left it: registered, lease-0 in ``phase``."""
    store = StateStore(tmp_path / "state")
    token = f"token-{device}"
    server.tokens[token] = device
    state = AgentState(device_id=device, token=token, server_url=SERVER)
    state = state.begin(server.task("lease-0", device))
    store.save(state)
    update = encode_vector(np.full(610, 0.5, np.float32))
    if phase != "downloaded":
        state = store.save_trained(state, update, num_examples=40, metrics={"train_loss": 1.0})
    if phase == "uploaded":
        store.save(state.uploaded())
    return store, hashlib.sha256(update).hexdigest()


def test_an_agent_registers_once_keeps_its_token_owner_only_and_reuses_it(
    server, clock, tmp_path, examples
):
    first = run(config(server, clock, tmp_path, examples))
    second = run(config(server, clock, tmp_path, examples))

    assert first.uploads_accepted == second.uploads_accepted == 1
    assert server.count("POST", "/v1/devices") == 1
    token = tmp_path / "state" / "token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_text() == "token-device-1"
    assert StateStore(tmp_path / "state").load().task is None


def test_a_cached_plan_is_not_downloaded_again_even_after_a_restart(
    server, clock, tmp_path, examples
):
    run(config(server, clock, tmp_path, examples, max_tasks=2))
    run(config(server, clock, tmp_path, examples))

    assert server.count("GET", "/v1/plans/") == 1
    assert server.count("GET", "/v1/jobs/") == 3  # weights: every task


def test_an_unknown_token_makes_the_agent_register_again(server, clock, tmp_path, examples):
    StateStore(tmp_path / "state").save(
        AgentState(device_id="forgotten", token="revoked", server_url=SERVER)
    )

    stats = run(config(server, clock, tmp_path, examples))

    assert stats.uploads_accepted == 1 and stats.failures == 0
    assert server.count("POST", "/v1/devices") == 1
    assert StateStore(tmp_path / "state").load().device_id == "device-1"


def test_a_state_registered_with_another_server_is_replaced(server, clock, tmp_path, examples):
    store, _ = recorded(tmp_path, server, phase="trained")
    moved = store.load()
    store.save(AgentState(device_id="x", token="y", server_url="http://old", task=moved.task))

    run(config(server, clock, tmp_path, examples))

    assert server.count("POST", "/v1/devices") == 1
    assert [lease for lease, _ in server.uploads] == ["lease-1"]  # lease-0 was the old server's
    assert not list((tmp_path / "state" / "updates").iterdir())


def test_a_trained_task_left_by_a_crash_is_uploaded_again_byte_for_byte(
    server, clock, tmp_path, examples
):
    _, saved = recorded(tmp_path, server, phase="trained")

    stats = run(config(server, clock, tmp_path, examples))

    assert server.uploads == [("lease-0", saved)]
    assert stats.uploads_accepted == 1
    assert server.count("POST", "/v1/check-in") == 0  # nothing trained twice, nothing new asked
    assert server.count("GET", "/v1/") == 0
    assert StateStore(tmp_path / "state").load().task is None


def test_a_training_interrupted_by_a_crash_is_reported_aborted_then_work_goes_on(
    server, clock, tmp_path, examples
):
    recorded(tmp_path, server, phase="downloaded")

    stats = run(config(server, clock, tmp_path, examples))

    assert server.aborts == [("lease-0", "other")]
    assert [lease for lease, _ in server.uploads] == ["lease-1"]
    assert stats.uploads_accepted == 1


def test_a_trained_task_whose_saved_update_was_lost_is_reported_aborted(
    server, clock, tmp_path, examples
):
    recorded(tmp_path, server, phase="trained")
    for saved in (tmp_path / "state" / "updates").iterdir():
        saved.write_bytes(b"torn")

    stats = run(config(server, clock, tmp_path, examples))

    assert server.aborts == [("lease-0", "error")]
    assert [lease for lease, _ in server.uploads] == ["lease-1"]
    assert stats.uploads_accepted == 1


def test_an_acknowledged_task_left_recorded_is_forgotten(server, clock, tmp_path, examples):
    recorded(tmp_path, server, phase="uploaded")

    run(config(server, clock, tmp_path, examples))

    assert not server.aborts
    assert [lease for lease, _ in server.uploads] == ["lease-1"]


def test_training_past_the_time_budget_is_aborted_as_a_timeout(server, clock, tmp_path, examples):
    server.epochs = 1000
    ticking = TickingClock(clock)

    stats = run(config(server, ticking, tmp_path, examples, task_budget_s=30.0))

    assert server.aborts == [("lease-1", "timeout")]
    assert stats.aborts == 1 and not server.uploads
    assert StateStore(tmp_path / "state").load().task is None


def test_losing_eligibility_mid_training_aborts_and_reports_why(server, clock, tmp_path, examples):
    server.epochs = 20
    probe = UnpluggedAfter(readings=3)

    stats = run(config(server, clock, tmp_path, examples, probe=probe))

    assert server.aborts == [("lease-1", "battery")]
    assert stats.aborts == 1 and not server.uploads


def test_an_ineligible_device_waits_without_checking_in(server, clock, tmp_path, examples):
    probe = FakeProbe(Readings(**UNPLUGGED))
    waits: list[float] = []
    agent = Agent(config(server, clock, tmp_path, examples, probe=probe, sleep=waits.append))
    probe_snapshot = probe.snapshot

    def snapshot():
        if len(waits) == 3:
            agent.stop()
        return probe_snapshot()

    probe.snapshot = snapshot

    agent.run()

    assert server.count("POST", "/v1/check-in") == 0
    assert len(waits) == 3 and all(60 <= wait <= 300 for wait in waits)


def test_stop_ends_an_agent_running_in_a_thread(server, clock, tmp_path, examples):
    unplugged = FakeProbe(Readings(**UNPLUGGED))
    agent = Agent(config(server, clock, tmp_path, examples, probe=unplugged, sleep=None))
    worker = threading.Thread(target=agent.run)
    worker.start()

    agent.stop()
    worker.join(timeout=10)

    assert not worker.is_alive()


def test_a_host_app_runs_the_agent_in_its_own_thread_on_a_sqlite_store(server, clock, tmp_path):
    rng = np.random.default_rng(1)
    with ExampleStore(tmp_path / "examples.db", now=clock.now) as store:
        store.add(rng.normal(0, 1, (30, 60)).astype(np.float32), rng.integers(0, 10, 30))
    agent = Agent(config(server, clock, tmp_path, tmp_path / "examples.db"))
    worker = threading.Thread(target=agent.run)

    worker.start()
    worker.join(timeout=30)

    assert agent.stats.uploads_accepted == 1


def test_a_plan_the_runtime_cannot_load_is_reported_with_its_cause(
    server, clock, tmp_path, examples
):
    server.plan = b"not a flatbuffer at all"
    agent = Agent(config(server, clock, tmp_path, examples))

    stats = agent.run()

    assert server.aborts == [("lease-1", "bad_plan")]  # the protocol's reason...
    [detail] = server.abort_details  # ...and the cause in words
    assert detail.startswith("bad_plan: the plan does not expose Fedge's signatures")
    assert stats.aborts == 1 and agent.every_task_failed()


def test_an_abort_detail_longer_than_the_protocol_allows_is_cut_to_fit(
    server, clock, tmp_path, examples, monkeypatch
):
    monkeypatch.setattr(
        "device_sdk.runner.describe_plan",
        lambda plan: (_ for _ in ()).throw(ManifestError("x" * 2000)),
    )

    run(config(server, clock, tmp_path, examples))

    [detail] = server.abort_details
    assert len(detail) == 500 and detail.startswith("bad_plan: xxx")


def test_an_agent_that_uploaded_has_not_failed_every_task(server, clock, tmp_path, examples):
    agent = Agent(config(server, clock, tmp_path, examples))

    agent.run()

    assert agent.stats.uploads_accepted == 1 and not agent.every_task_failed()


def test_a_task_cut_short_by_stop_is_not_counted_as_failed(server, clock, tmp_path, examples):
    server.epochs = 1000
    agent = Agent(config(server, TickingClock(clock), tmp_path, examples))
    probe = agent.probe
    readings = 0

    def snapshot():
        nonlocal readings
        readings += 1
        if readings == 4:  # mid-training
            agent.stop()
        return FakeProbe.snapshot(probe)

    probe.snapshot = snapshot

    agent.run()

    assert server.aborts == [("lease-1", "other")]
    assert agent.stats.tasks == 1 and not agent.every_task_failed()


def idle_log(caplog, server, clock, tmp_path, examples, **overrides) -> str:
    """The agent's first line about why it idles; it is stopped at its first wait."""
    agent = Agent(config(server, clock, tmp_path, examples, **overrides))

    def sleep(seconds: float) -> None:
        agent.stop()

    agent.config = replace(agent.config, sleep=sleep)
    with caplog.at_level(logging.INFO, logger="fedge.device"):
        agent.run()
    [line] = [r.getMessage() for r in caplog.records if "checking in again" in r.getMessage()]
    return line


def test_an_agent_without_a_task_says_why_and_when_it_asks_again(
    server, clock, tmp_path, examples, caplog
):
    server.retry = {"min": 1620.0, "max": 1620.0, "reason": "no job is running"}

    line = idle_log(caplog, server, clock, tmp_path, examples)

    assert line == "no task yet (no job is running); checking in again in 27 min"


def test_an_ineligible_agent_names_the_reason_the_probe_and_the_way_out(
    server, clock, tmp_path, examples, caplog
):
    line = idle_log(
        caplog,
        server,
        clock,
        tmp_path,
        examples,
        probe=FakeProbe(Readings(charging=True, load_average=4.0, cpu_count=1)),
        probe_label="auto: linux",
        ineligible_hint="use --probe none on a test box",
        ineligible_wait_s=(120.0, 120.0),
    )

    assert line == (
        "ineligible: user_activity (probe auto: linux); use --probe none on a test box; "
        "checking in again in 2 min"
    )


def test_an_agent_that_cannot_reach_the_coordinator_says_where_it_tried(
    clock, tmp_path, examples, caplog
):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    line = idle_log(caplog, None, clock, tmp_path, examples, transport=httpx.MockTransport(refuse))

    assert line.startswith(
        f"coordinator unreachable at {SERVER}: [Errno 111] Connection refused; checking in again in"
    )


@pytest.mark.parametrize("url", ["coordinator:8000", "127.0.0.1:8000", "ftp://host", "http://"])
def test_a_server_url_without_http_scheme_and_host_is_refused_at_once(url, tmp_path):
    with pytest.raises(ValueError, match=r"needs http:// or https:// and a host"):
        AgentConfig(server_url=url, state_dir=tmp_path, data=tmp_path)


def test_a_plan_describes_itself_as_its_manifest_does(plans_dir):
    plan = (plans_dir / "synthetic_logreg.tflite").read_bytes()
    exported = PlanManifest.from_json((plans_dir / "synthetic_logreg.json").read_text())

    described = describe_plan(plan)

    assert described.plan_sha256 == exported.plan_sha256
    assert described.inputs["x"].shape == exported.inputs["x"].shape
    assert (described.num_params, described.num_classes) == (610, 10)


def test_a_dropped_download_resumes_with_a_range_request(tmp_path):
    blob = bytes(range(256)) * 64
    server = RangeServer(blob, drop_after=5000)
    with httpx.Client(base_url=SERVER, transport=server.transport) as http:
        downloader = BlobDownloader(http, tmp_path, token=lambda: "t", chunk_bytes=1000)
        sha = hashlib.sha256(blob).hexdigest()

        with pytest.raises(httpx.ReadError):
            downloader.fetch("/blob", sha)
        data = downloader.fetch("/blob", sha)

    assert data == blob
    assert server.ranges == [None, "bytes=5000-"]
    assert not list(tmp_path.iterdir())  # the partial file is gone


def test_a_server_without_range_support_is_downloaded_whole_again(tmp_path):
    blob = bytes(range(256)) * 64
    server = RangeServer(blob, drop_after=5000, ranges=False)
    with httpx.Client(base_url=SERVER, transport=server.transport) as http:
        downloader = BlobDownloader(http, tmp_path, token=lambda: "t", chunk_bytes=1000)
        sha = hashlib.sha256(blob).hexdigest()
        with pytest.raises(httpx.ReadError):
            downloader.fetch("/blob", sha)

        assert downloader.fetch("/blob", sha) == blob


def test_a_corrupt_or_oversized_download_is_a_failure(tmp_path):
    blob = b"x" * 5000
    with httpx.Client(base_url=SERVER, transport=RangeServer(blob).transport) as http:
        downloader = BlobDownloader(http, tmp_path, token=lambda: None, max_bytes=4000)

        too_large = downloader.fetch("/blob", hashlib.sha256(blob).hexdigest())
        downloader.max_bytes = 10_000
        corrupt = downloader.fetch("/blob", "0" * 64)

    assert isinstance(too_large, Failure) and not too_large.retryable
    assert isinstance(corrupt, Failure) and corrupt.reason == "corrupt_download"


def test_the_examples_path_opens_the_store_it_holds(tmp_path, clock):
    shards = tmp_path / "shards"
    shards.mkdir()
    (tmp_path / "db").mkdir()
    ExampleStore(tmp_path / "db" / "examples.db", now=clock.now).close()

    assert isinstance(open_examples(shards, now=clock.now), NpzShardStore)
    assert isinstance(open_examples(tmp_path / "db", now=clock.now), ExampleStore)
    assert isinstance(open_examples(tmp_path / "db" / "examples.db", now=clock.now), ExampleStore)
    with pytest.raises(ExampleStoreError):
        open_examples(tmp_path / "missing", now=clock.now)


def test_device_run_parses_into_a_runnable_command():
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["device", "run", "--server", SERVER, "--data", "/d"])

    assert args.state_dir == "~/.local/state/fedge" and args.max_tasks is None
    assert callable(args.run)


# --- fakes ----------------------------------------------------------------------------------


class TickingClock:
    """A clock that moves a second every time it is read: training takes time."""

    def __init__(self, clock):
        self.clock = clock

    def now(self):
        self.clock.advance(1.0)
        return self.clock.now()

    def advance(self, seconds):
        self.clock.advance(seconds)


class UnpluggedAfter(FakeProbe):
    """Charging for the first ``readings`` readings, then unplugged at 10 %."""

    def __init__(self, readings):
        super().__init__(Readings(charging=True))
        self.left = readings

    def snapshot(self):
        self.left -= 1
        if self.left < 0:
            self.update(**UNPLUGGED)
        return super().snapshot()


class RangeServer:
    """Serves one blob, honouring ``Range`` if ``ranges``; the first answer breaks off."""

    def __init__(self, blob, *, drop_after=None, ranges=True):
        self.blob, self.drop_after, self.ranges_supported = blob, drop_after, ranges
        self.ranges = []

    @property
    def transport(self):
        return httpx.MockTransport(self.handle)

    def handle(self, request):
        asked = request.headers.get("Range")
        self.ranges.append(asked)
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
        if not self.ranges_supported or not start:
            status, headers, body = 200, {}, self.blob
        else:
            end = len(self.blob) - 1
            status, body = 206, self.blob[start:]
            headers = {"Content-Range": f"bytes {start}-{end}/{len(self.blob)}"}
        if len(self.ranges) == 1 and self.drop_after:
            return httpx.Response(status, headers=headers, stream=Broken(body[: self.drop_after]))
        return httpx.Response(status, headers=headers, content=body)


class Broken(httpx.SyncByteStream):
    def __init__(self, head):
        self.head = head

    def __iter__(self):
        yield self.head
        raise httpx.ReadError("connection reset by the test")
