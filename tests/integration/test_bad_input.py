"""Every bad input gets a 4xx with a message, and never changes the global model."""

import json

import httpx
import numpy as np
import pytest

from device_sdk.errors import ProtocolError
from fedge.protocol import Task
from fedge.wire import MEDIA_TYPE, encode_vector
from tests.integration.conftest import FACTS


@pytest.fixture
def live_task(coordinator):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="async", buffer_size=1, max_update_norm=10.0
    )
    device = coordinator.device()
    task = device.check_in(FACTS)
    assert isinstance(task, Task)
    return coordinator, job["id"], device, task


def put_update(coordinator, device, task, body, **headers):
    sent = {
        "Authorization": f"Bearer {device.token}",
        "X-Fedge-Base-Version": str(task.global_version),
        "X-Fedge-Num-Examples": "10",
        "Content-Type": MEDIA_TYPE,
    }
    sent.update(headers)
    return httpx.put(
        f"{coordinator.url}/v1/leases/{task.lease_id}/update", content=body, headers=sent
    )


def assert_refused(response, status, *fragments):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}
    for fragment in fragments:
        assert fragment in body["message"], body["message"]


def assert_model_unchanged(coordinator, job_id):
    assert coordinator.job(job_id)["current_version"] == 0
    assert [v["number"] for v in coordinator.versions(job_id)] == [0]


@pytest.mark.parametrize(
    ("body", "status", "fragments"),
    [
        (encode_vector(np.zeros(609, np.float32)), 400, ("expected 610 weights, got 609",)),
        (np.zeros(610, np.float64).tobytes(), 400, ("not a valid weight delta",)),
        (b"", 400, ("too short",)),
        (encode_vector(np.full(610, np.nan, np.float32)), 400, ("NaN or Inf",)),
        (encode_vector(np.full(610, np.inf, np.float32)), 400, ("NaN or Inf",)),
        (encode_vector(np.full(610, 1.0, np.float32)), 400, ("exceeds the bound 10",)),
    ],
    ids=["wrong-length", "wrong-dtype", "empty", "nan", "inf", "norm-above-bound"],
)
def test_a_bad_update_is_refused_with_a_message_and_the_model_is_unchanged(
    live_task, body, status, fragments
):
    coordinator, job_id, device, task = live_task

    response = put_update(coordinator, device, task, body)

    assert_refused(response, status, *fragments)
    assert_model_unchanged(coordinator, job_id)


def test_after_a_refused_update_the_lease_still_accepts_a_good_one(live_task):
    coordinator, job_id, device, task = live_task
    put_update(coordinator, device, task, b"garbage")

    receipt = device.upload(task, encode_vector(np.full(610, 0.01, np.float32)), num_examples=10)

    assert receipt.status == "accepted"
    assert coordinator.job(job_id)["current_version"] == 1


def test_a_wrong_base_version_is_refused(live_task):
    coordinator, job_id, device, task = live_task

    response = put_update(
        coordinator,
        device,
        task,
        encode_vector(np.zeros(610, np.float32)),
        **{"X-Fedge-Base-Version": "7"},
    )

    assert_refused(response, 409, "handed out version 0", "trained from version 7")
    assert_model_unchanged(coordinator, job_id)


@pytest.mark.parametrize("examples", ["0", "-5", "ten"])
def test_a_bad_example_count_is_refused(live_task, examples):
    coordinator, job_id, device, task = live_task

    response = put_update(
        coordinator,
        device,
        task,
        encode_vector(np.zeros(610, np.float32)),
        **{"X-Fedge-Num-Examples": examples},
    )

    assert response.status_code in (400, 422)
    assert "num" in response.json()["message"].lower()
    assert_model_unchanged(coordinator, job_id)


def test_someone_elses_lease_is_forbidden(live_task):
    coordinator, job_id, _, task = live_task
    intruder = coordinator.device()

    with pytest.raises(ProtocolError) as refused:
        intruder.upload(task, encode_vector(np.zeros(610, np.float32)), num_examples=10)

    assert refused.value.status == 403
    assert "belongs to another device" in refused.value.message
    assert_model_unchanged(coordinator, job_id)


def test_an_unknown_lease_is_not_found(live_task):
    coordinator, _, device, _task = live_task
    response = httpx.put(
        f"{coordinator.url}/v1/leases/no-such-lease/update",
        content=encode_vector(np.zeros(610, np.float32)),
        headers={
            "Authorization": f"Bearer {device.token}",
            "X-Fedge-Base-Version": "0",
            "X-Fedge-Num-Examples": "1",
            "Content-Type": MEDIA_TYPE,
        },
    )

    assert_refused(response, 404, "no lease no-such-lease")


@pytest.mark.parametrize(
    ("authorization", "status", "fragment"),
    [
        (None, 401, "missing Authorization header"),
        ("Basic abc", 401, "malformed Authorization header"),
        ("Bearer forged-token", 401, "unknown device token"),
    ],
)
def test_missing_malformed_or_forged_tokens_are_refused(
    coordinator, authorization, status, fragment
):
    headers = {"Authorization": authorization} if authorization else {}

    response = httpx.post(
        f"{coordinator.url}/v1/check-in", json={"num_examples": 5}, headers=headers
    )

    assert_refused(response, status, fragment)


def test_a_device_token_cannot_use_the_admin_api(coordinator):
    device = coordinator.device()

    response = httpx.get(
        f"{coordinator.url}/v1/admin/jobs", headers={"Authorization": f"Bearer {device.token}"}
    )

    assert_refused(response, 403, "admin token")


def test_the_admin_token_cannot_act_as_a_device(coordinator):
    response = coordinator.admin.post("/v1/check-in", json={"num_examples": 5})

    assert_refused(response, 403, "cannot act as a device")


def test_an_oversized_body_is_refused_before_it_is_read(live_task):
    coordinator, job_id, device, task = live_task

    response = put_update(coordinator, device, task, b"\0" * 1_000_001)

    assert_refused(response, 413, "exceeds the 1000000-byte limit")
    assert_model_unchanged(coordinator, job_id)


def test_malformed_json_is_a_422_with_a_message(coordinator):
    device = coordinator.device()

    response = httpx.post(
        f"{coordinator.url}/v1/check-in",
        content=b"{not json",
        headers={"Authorization": f"Bearer {device.token}", "Content-Type": "application/json"},
    )

    assert_refused(response, 422, "JSON")


def test_malformed_metrics_header_is_refused(live_task):
    coordinator, job_id, device, task = live_task

    response = put_update(
        coordinator,
        device,
        task,
        encode_vector(np.zeros(610, np.float32)),
        **{"X-Fedge-Metrics": "{oops"},
    )

    assert_refused(response, 400, "X-Fedge-Metrics is not valid JSON")
    assert_model_unchanged(coordinator, job_id)


def test_an_unknown_job_config_field_is_refused(coordinator):
    plan_id = coordinator.publish_plan()

    response = coordinator.admin.post(
        "/v1/admin/jobs", json={"name": "x", "plan_id": plan_id, "aggregation": {"bufer_size": 3}}
    )

    assert_refused(response, 422, "bufer_size")


def test_a_plan_whose_manifest_does_not_match_its_bytes_is_refused(coordinator):
    manifest = json.loads((coordinator.plans_dir / "synthetic_logreg.json").read_text())
    plan = coordinator.admin.put("/v1/admin/blobs", content=b"not the plan").json()["sha256"]
    weights = coordinator.admin.put(
        "/v1/admin/blobs", content=(coordinator.plans_dir / "synthetic_logreg.weights").read_bytes()
    ).json()["sha256"]

    response = coordinator.admin.post(
        "/v1/admin/plans",
        json={"manifest": manifest, "plan_sha256": plan, "initial_weights_sha256": weights},
    )

    assert_refused(response, 400, "does not match")


def test_clip_policy_scales_an_oversized_update_to_the_bound(coordinator):
    job = coordinator.create_job(
        coordinator.publish_plan(),
        mode="async",
        buffer_size=1,
        max_update_norm=1.0,
        norm_policy="clip",
    )
    device = coordinator.device()
    task = device.check_in(FACTS)
    start = coordinator.weights(job["id"], 0)

    receipt = device.upload(task, encode_vector(np.full(610, 1.0, np.float32)), num_examples=10)

    assert receipt.clipped
    assert np.linalg.norm(coordinator.weights(job["id"], 1) - start) == pytest.approx(1.0, rel=1e-4)
