"""A real coordinator on loopback: uvicorn in a thread, a manual clock, a fresh database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from coordinator.admin_client import AdminClient
from coordinator.api.app import create_app
from coordinator.settings import Settings
from device_sdk.client import CoordinatorClient
from fedge.clock import ManualClock
from fedge.protocol import EligibilityFacts
from fedge.wire import decode_vector
from tests.databases import fresh_database

ADMIN_TOKEN = "test-admin-token"


@dataclass
class LiveCoordinator:
    """A running coordinator and what a test needs to drive it."""

    url: str
    clock: ManualClock | None  # None for a server in another process, on the system clock
    admin: httpx.Client
    plans_dir: Path
    db_url: str

    def device(self) -> CoordinatorClient:
        client = CoordinatorClient(self.url)
        client.register(runtime="test")
        return client

    def publish_plan(self, name: str = "synthetic_logreg") -> int:
        with AdminClient(self.url, ADMIN_TOKEN) as admin:
            return int(admin.publish_plan(self.plans_dir / f"{name}.tflite")["id"])

    def create_job(self, plan_id: int, **aggregation: Any) -> dict[str, Any]:
        extra = {
            k: aggregation.pop(k)
            for k in ("population", "task", "max_versions", "keep_updates", "compression")
            if k in aggregation
        }
        response = self.admin.post(
            "/v1/admin/jobs",
            json={"name": "test job", "plan_id": plan_id, "aggregation": aggregation, **extra},
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.admin.get(f"/v1/admin/jobs/{job_id}").json())

    def versions(self, job_id: int) -> list[dict[str, Any]]:
        return list(self.admin.get(f"/v1/admin/jobs/{job_id}/versions").json())

    def weights(self, job_id: int, number: int) -> np.ndarray:
        response = self.admin.get(f"/v1/admin/jobs/{job_id}/versions/{number}/weights")
        response.raise_for_status()
        return decode_vector(response.content)


FACTS = EligibilityFacts(num_examples=50)


def serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the coordinator did not start")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(params=["sqlite", "postgres"])
def coordinator(
    request: pytest.FixtureRequest, tmp_path: Path, plans_dir: Path
) -> Iterator[LiveCoordinator]:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    with fresh_database(request.param, tmp_path) as db_url:
        clock = ManualClock()
        settings = Settings(db_url=db_url, admin_token=ADMIN_TOKEN, max_body_bytes=1_000_000)
        app = create_app(settings, clock=clock, background_sweep=False)
        server, thread, url = serve(app)
        admin = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        )
        try:
            yield LiveCoordinator(
                url=url, clock=clock, admin=admin, plans_dir=plans_dir, db_url=db_url
            )
        finally:
            admin.close()
            server.should_exit = True
            thread.join(timeout=10)
            app.state.engine.dispose()
