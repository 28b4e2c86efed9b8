"""A live coordinator on loopback whose job has made versions, for the dashboard's tests.

No TensorFlow: the plan is a stand-in of four weights (the services never run it), and the
devices are scripted over HTTP with the device SDK's own client: they check in, upload deltas
(one of them with NaN, refused), and one aborts. The server is shared by the module's tests,
which only read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from coordinator.admin_client import AdminClient
from coordinator.api.app import create_app
from coordinator.settings import Settings
from device_sdk.client import CoordinatorClient
from device_sdk.errors import ProtocolError
from fedge.clock import ManualClock
from fedge.manifest import HyperParameters, PlanManifest, TensorSpec, WeightSlice
from fedge.protocol import EligibilityFacts, Task
from fedge.wire import encode_vector
from tests.databases import fresh_database
from tests.integration.conftest import serve

ADMIN_TOKEN = "dashboard-admin-token"
NUM_PARAMS = 4
UPLOADS = 6  # buffer_size 2: versions 1, 2 and 3
TASK_SECONDS = 12.0
PLAN_BYTES = b"a stand-in plan: the coordinator never runs it"


@dataclass
class LiveJob:
    """A running coordinator, its admin API client and the job its devices trained."""

    url: str
    clock: ManualClock
    admin: AdminClient
    http: httpx.Client  # no credentials
    job_id: int
    device_token: str


def publish_stand_in_plan(url: str, admin: AdminClient) -> int:
    """Register a four-weight plan whose bytes are a stand-in; return its id."""
    weights = encode_vector(np.zeros(NUM_PARAMS, np.float32))
    manifest = PlanManifest(
        name="stand-in",
        version="1",
        plan_file="stand-in.tflite",
        plan_sha256=hashlib.sha256(PLAN_BYTES).hexdigest(),
        plan_bytes=len(PLAN_BYTES),
        inputs={"x": TensorSpec((None, 3), "float32"), "y": TensorSpec((None,), "int32")},
        num_classes=1,
        num_params=NUM_PARAMS,
        weights_layout=(
            WeightSlice("dense/kernel", (3, 1), 0, 3),
            WeightSlice("dense/bias", (1,), 3, 1),
        ),
        optimizer="sgd",
        hparams=HyperParameters(learning_rate=0.1),
        initial_weights_file="stand-in.weights",
        initial_weights_sha256=hashlib.sha256(weights).hexdigest(),
        created_by="tests",
    )
    body = {
        "manifest": json.loads(manifest.to_json()),
        "plan_sha256": admin.put_blob(PLAN_BYTES),
        "initial_weights_sha256": admin.put_blob(weights),
    }
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = httpx.post(f"{url}/v1/admin/plans", json=body, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def train_job(url: str, admin: AdminClient, clock: ManualClock) -> tuple[int, str]:
    """An async job (K = 2) that devices move to version 3; a NaN upload and an abort too."""
    plan_id = publish_stand_in_plan(url, admin)
    job = admin.create_job(
        {
            "name": "dashboard job",
            "plan_id": plan_id,
            "aggregation": {"mode": "async", "buffer_size": 2},
        }
    )
    facts = EligibilityFacts(num_examples=20, runtime="litert", sdk_version="0.1.0")
    token = ""
    for index in range(UPLOADS + 2):
        clock.advance(30.0)  # half a minute between devices: versions take time to fill
        device = CoordinatorClient(url)
        _, token = device.register(runtime="litert", sdk_version="0.1.0")
        task = device.check_in(facts)
        assert isinstance(task, Task), task
        clock.advance(TASK_SECONDS)  # training
        if index == UPLOADS:  # gives its task back
            device.abort(task, "battery")
        elif index == UPLOADS + 1:  # a broken update, refused and counted
            with pytest.raises(ProtocolError):
                device.upload(
                    task, encode_vector(np.full(NUM_PARAMS, np.nan, np.float32)), num_examples=5
                )
        else:
            delta = np.full(NUM_PARAMS, 0.01 * (index + 1), np.float32)
            receipt = device.upload(
                task,
                encode_vector(delta),
                num_examples=10 + index,
                metrics={"eval_accuracy": 0.5 + 0.05 * index},
            )
            assert receipt.status == "accepted"
        device.close()
    return int(job["id"]), token


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def live_job(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveJob]:
    """A coordinator over loopback, on each database, whose job has made three versions."""
    with fresh_database(request.param, tmp_path_factory.mktemp("dashboard")) as db_url:
        yield from _serve(db_url)


def _serve(db_url: str) -> Iterator[LiveJob]:
    clock = ManualClock()
    settings = Settings(db_url=db_url, admin_token=ADMIN_TOKEN)
    app = create_app(settings, clock=clock, background_sweep=False)
    server, thread, url = serve(app)
    admin = AdminClient(url, ADMIN_TOKEN)
    http = httpx.Client(base_url=url, timeout=30)
    try:
        job_id, device_token = train_job(url, admin, clock)
        yield LiveJob(
            url=url, clock=clock, admin=admin, http=http, job_id=job_id, device_token=device_token
        )
    finally:
        http.close()
        admin.close()
        server.should_exit = True
        thread.join(timeout=10)
        app.state.engine.dispose()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where the browser tests' screenshots are kept after the run: build/test-artifacts/."""
    folder = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
