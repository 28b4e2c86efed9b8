"""The coordinator's edges, probed as an outside tester would: raw HTTP on loopback.

Oversized JSON bodies are cut off at once, credentials come before any body, uploads take only
the weights media type, and two ``Authorization`` headers are a client error.
"""

import struct
import zlib
from dataclasses import asdict

import httpx
import numpy as np
import pytest

from fedge.protocol import Task
from fedge.wire import MEDIA_TYPE, encode_vector
from tests.integration.conftest import ADMIN_TOKEN, FACTS

BIG = 200 * 1024 * 1024
CHUNK = 64 * 1024


class CountingBody:
    """A streamed body of ``BIG`` bytes that counts how many the client managed to send."""

    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self):
        chunk = b" " * CHUNK
        while self.sent < BIG:
            self.sent += CHUNK
            yield chunk


def post_streamed(url, **headers):
    body = CountingBody()
    try:
        response = httpx.post(url, content=iter(body), headers=headers, timeout=60)
    except httpx.TransportError as error:  # the server hung up without an answer
        pytest.fail(f"no answer after {body.sent} bytes: {error!r}")
    return response, body.sent


def assert_refused(response, status, *fragments):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}
    for fragment in fragments:
        assert fragment in body["message"]


@pytest.mark.parametrize("path", ["/v1/devices", "/v1/admin/jobs"])
def test_a_huge_json_body_is_cut_off_with_413_before_it_is_read(coordinator, path):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"}
    if path == "/v1/devices":
        del headers["Authorization"]

    response, sent = post_streamed(f"{coordinator.url}{path}", **headers)

    assert_refused(response, 413, "limit")
    assert sent < BIG // 10


def test_a_huge_declared_content_length_is_refused_without_reading(coordinator):
    response, sent = post_streamed(
        f"{coordinator.url}/v1/devices",
        **{"Content-Type": "application/json", "Content-Length": str(BIG)},
    )

    assert_refused(response, 413, f"{BIG} bytes")
    assert sent < BIG // 10


def test_a_huge_check_in_without_a_token_is_a_401_before_the_body_is_read(coordinator):
    response, sent = post_streamed(
        f"{coordinator.url}/v1/check-in", **{"Content-Type": "application/json"}
    )

    assert_refused(response, 401, "missing Authorization header")
    assert sent < BIG // 10


def test_a_json_body_within_the_limit_is_still_served(coordinator):
    response = httpx.post(
        f"{coordinator.url}/v1/devices", json={"runtime": "test", "sdk_version": "x" * 10}
    )

    assert response.status_code == 201, response.text


@pytest.fixture
def live_task(coordinator):
    coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=1)
    device = coordinator.device()
    task = device.check_in(FACTS)
    assert isinstance(task, Task)
    return coordinator, device, task


def upload(coordinator, device, task, body, content_type):
    headers = {
        "Authorization": f"Bearer {device.token}",
        "X-Fedge-Base-Version": str(task.global_version),
        "X-Fedge-Num-Examples": "10",
    }
    if content_type is not None:
        headers["Content-Type"] = content_type
    return httpx.put(
        f"{coordinator.url}/v1/leases/{task.lease_id}/update", content=body, headers=headers
    )


@pytest.mark.parametrize("content_type", [None, "application/json", "application/octet-stream"])
def test_an_upload_without_the_weights_media_type_is_a_415(live_task, content_type):
    coordinator, device, task = live_task

    response = upload(
        coordinator, device, task, encode_vector(np.zeros(610, np.float32)), content_type
    )

    assert_refused(response, 415, MEDIA_TYPE)


def test_an_upload_with_non_zero_reserved_header_bytes_is_refused(live_task):
    coordinator, device, task = live_task
    encoded = bytearray(encode_vector(np.zeros(610, np.float32)))
    struct.pack_into("<H", encoded, 6, 0xBEEF)
    body = bytes(encoded[:-4])

    response = upload(
        coordinator, device, task, body + struct.pack("<I", zlib.crc32(body)), MEDIA_TYPE
    )

    assert_refused(response, 400, "reserved")


def test_the_device_client_uploads_with_the_weights_media_type(live_task):
    _, device, task = live_task

    receipt = device.upload(task, encode_vector(np.zeros(610, np.float32)), num_examples=10)

    assert receipt.lease_id == task.lease_id


def two_authorizations(first, second):
    return httpx.Headers(
        [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]
    )


def test_two_authorization_headers_on_a_device_route_are_a_400(coordinator):
    device = coordinator.device()

    response = httpx.post(
        f"{coordinator.url}/v1/check-in",
        json=asdict(FACTS),
        headers=two_authorizations(device.token, ADMIN_TOKEN),
    )

    assert_refused(response, 400, "Authorization headers")


def test_two_authorization_headers_on_an_admin_route_are_a_400(coordinator):
    device = coordinator.device()

    response = httpx.get(
        f"{coordinator.url}/v1/admin/jobs", headers=two_authorizations(ADMIN_TOKEN, device.token)
    )

    assert_refused(response, 400, "Authorization headers")
