"""Real coordinator processes and scripted devices that retry through outages, for fleet tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import create_engine, text

from coordinator.served import ServedCoordinator, free_port  # noqa: F401 (the tests use it)
from device_sdk.client import CoordinatorClient
from device_sdk.errors import ProtocolError
from fedge.protocol import EligibilityFacts, Task
from fedge.wire import decode_vector, encode_vector
from tests.integration.conftest import ADMIN_TOKEN, LiveCoordinator

NUM_PARAMS = 610  # synthetic_logreg


class ServerProcess(ServedCoordinator):
    """A served coordinator for fleet tests: short expiry sweeps; ``stop`` is a SIGKILL."""

    def __init__(self, db_url: str, port: int, log: Path, *, workers: int = 1) -> None:
        super().__init__(
            db_url,
            port=port,
            workers=workers,
            admin_token=ADMIN_TOKEN,
            log_path=log,
            extra_env={"FEDGE_EXPIRY_SWEEP_SECONDS": "0.5"},
            timeout=30.0,
        )

    def stop(self, grace: float = 0.0) -> None:
        """SIGKILL the server if it is still running."""
        if self.running:
            self.kill()


def retrying(call, stop: threading.Event):
    """Call until the server answers; transport errors (a dead server) are retried."""
    while not stop.is_set():
        try:
            return call()
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError


def device_loop(
    url: str | Sequence[str],
    seed: int,
    acknowledged: dict[str, str],
    stop: threading.Event,
    lock: threading.Lock,
) -> None:
    """Run a scripted device until ``stop``; see :func:`run_device`."""
    try:
        run_device(url, seed, acknowledged, stop, lock)
    except TimeoutError:  # the test is over
        return


def run_device(
    url: str | Sequence[str],
    seed: int,
    acknowledged: dict[str, str],
    stop: threading.Event,
    lock: threading.Lock,
) -> None:
    """Check in and upload until stopped; with several URLs, alternate replicas per request."""
    urls = [url] if isinstance(url, str) else list(url)
    rng = np.random.default_rng(seed)
    clients = [CoordinatorClient(u, timeout=5) for u in urls]
    client = clients[0]
    retrying(lambda: client.register(runtime="fleet-test"), stop)
    for other in clients[1:]:
        other.token = client.token
    facts = EligibilityFacts(num_examples=10)
    turn = 0
    while not stop.is_set():
        turn += 1
        client = clients[turn % len(clients)]
        answer = retrying(lambda: client.check_in(facts), stop)  # noqa: B023
        if not isinstance(answer, Task):
            time.sleep(0.02)
            continue
        delta = encode_vector(rng.normal(0, 0.01, NUM_PARAMS).astype(np.float32))
        uploader = clients[(turn + 1) % len(clients)]  # upload through the other replica
        try:
            receipt = retrying(lambda: uploader.upload(answer, delta, num_examples=10), stop)  # noqa: B023
        except ProtocolError as refused:  # e.g. too stale after a long outage: refused, not lost
            if refused.status >= 500:
                with lock:
                    acknowledged[f"server-error:{answer.lease_id}"] = refused.message
            continue
        with lock:
            acknowledged[answer.lease_id] = receipt.status


def check_invariants(
    db_url: str,
    job_id: int,
    initial: np.ndarray,
    final: np.ndarray,
    final_version: int,
    acknowledged: dict[str, str],
    buffer_size: int,
) -> None:
    """Nothing acknowledged lost, nothing counted twice, history gapless, weights exact."""
    engine = create_engine(db_url)
    with engine.connect() as db:
        updates = db.execute(text("SELECT lease_id, delta_sha256, version FROM updates")).all()
        versions = db.execute(
            text("SELECT number, num_updates FROM versions WHERE job_id = :j ORDER BY number"),
            {"j": job_id},
        ).all()
        blobs = {
            sha: bytes(data)
            for sha, data in db.execute(text("SELECT sha256, data FROM blobs")).all()
        }
    engine.dispose()

    errors = {k: v for k, v in acknowledged.items() if k.startswith("server-error:")}
    assert not errors, f"the coordinator answered 5xx: {errors}"
    stored = {u.lease_id for u in updates}
    assert set(acknowledged) <= stored, "an acknowledged upload was lost"
    assert len(stored) == len(updates), "a lease has two updates"
    assert [v.number for v in versions] == list(range(final_version + 1)), (
        "version history has a gap"
    )
    in_versions = [u for u in updates if u.version is not None]
    assert sum(v.num_updates for v in versions) == len(in_versions)
    expected = initial.astype(np.float64)
    for number in range(1, final_version + 1):
        members = [u for u in in_versions if u.version == number]
        assert len(members) == buffer_size
        deltas = [decode_vector(blobs[u.delta_sha256]).astype(np.float64) for u in members]
        expected += np.mean(deltas, axis=0)  # equal example counts, constant staleness
    np.testing.assert_allclose(final, expected, atol=1e-5)


@contextlib.contextmanager
def fleet_job(
    url: str, plans_dir: Path, db_url: str, *, buffer_size: int
) -> Iterator[tuple[LiveCoordinator, dict[str, Any], np.ndarray]]:
    """An async job that makes the final weights checkable: constant staleness, no cap."""
    admin = httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    )
    live = LiveCoordinator(url=url, clock=None, admin=admin, plans_dir=plans_dir, db_url=db_url)
    try:
        job = live.create_job(
            live.publish_plan(),
            mode="async",
            concurrency=8,
            buffer_size=buffer_size,
            max_staleness=1000,
            staleness="constant",
            keep_updates=True,  # check_invariants recomputes the weights from every delta
        )
        yield live, job, live.weights(job["id"], 0)
    finally:
        admin.close()


@contextlib.contextmanager
def running_fleet(urls: str | Sequence[str], devices: int) -> Iterator[dict[str, str]]:
    """Scripted devices working in threads; yields the uploads acknowledged so far (by lease)."""
    acknowledged: dict[str, str] = {}
    stop, lock = threading.Event(), threading.Lock()
    threads = [
        threading.Thread(target=device_loop, args=(urls, i, acknowledged, stop, lock), daemon=True)
        for i in range(devices)
    ]
    for thread in threads:
        thread.start()
    try:
        yield acknowledged
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
