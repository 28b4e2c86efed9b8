"""Plan and weights downloads: immutable, cached by ETag, resumable with Range."""

import hashlib

import httpx
import pytest

from fedge.protocol import Task
from tests.integration.conftest import FACTS


@pytest.fixture
def task_and_http(coordinator):
    coordinator.create_job(coordinator.publish_plan(), mode="async")
    device = coordinator.device()
    task = device.check_in(FACTS)
    assert isinstance(task, Task)
    http = httpx.Client(
        base_url=coordinator.url, headers={"Authorization": f"Bearer {device.token}"}
    )
    yield task, http
    http.close()


def test_a_download_carries_its_sha256_as_etag_and_a_matching_etag_gets_304(task_and_http):
    task, http = task_and_http

    whole = http.get(task.plan_url)
    again = http.get(task.plan_url, headers={"If-None-Match": whole.headers["ETag"]})

    assert whole.status_code == 200
    assert whole.headers["ETag"] == f'"{task.plan_sha256}"'
    assert hashlib.sha256(whole.content).hexdigest() == task.plan_sha256
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert again.status_code == 304 and again.content == b""


def test_a_range_request_resumes_a_download_where_it_stopped(task_and_http):
    task, http = task_and_http
    whole = http.get(task.weights_url).content
    etag = f'"{task.weights_sha256}"'

    rest = http.get(task.weights_url, headers={"Range": "bytes=1000-", "If-Range": etag})

    assert rest.status_code == 206
    assert rest.headers["Content-Range"] == f"bytes 1000-{len(whole) - 1}/{len(whole)}"
    assert whole[:1000] + rest.content == whole


def test_bounded_and_suffix_ranges_give_exactly_those_bytes(task_and_http):
    task, http = task_and_http
    whole = http.get(task.plan_url).content

    middle = http.get(task.plan_url, headers={"Range": "bytes=10-19"})
    tail = http.get(task.plan_url, headers={"Range": "bytes=-5"})

    assert middle.status_code == 206 and middle.content == whole[10:20]
    assert tail.status_code == 206 and tail.content == whole[-5:]


def test_a_range_for_another_version_of_the_entity_gets_the_whole_blob(task_and_http):
    task, http = task_and_http

    answer = http.get(task.plan_url, headers={"Range": "bytes=100-", "If-Range": '"other"'})

    assert answer.status_code == 200
    assert hashlib.sha256(answer.content).hexdigest() == task.plan_sha256


def test_a_range_past_the_end_is_416_with_the_size(task_and_http):
    task, http = task_and_http
    size = len(http.get(task.plan_url).content)

    answer = http.get(task.plan_url, headers={"Range": f"bytes={size}-"})

    assert answer.status_code == 416
    assert answer.headers["Content-Range"] == f"bytes */{size}"


def test_a_malformed_range_is_ignored_and_the_whole_blob_sent(task_and_http):
    task, http = task_and_http

    answer = http.get(task.plan_url, headers={"Range": "pages=1-2"})

    assert answer.status_code == 200
