"""Updates of extreme but finite values: refused with a reason, never a 500 or an Inf model."""

import numpy as np
import pytest

from device_sdk.errors import ProtocolError
from fedge.protocol import Task
from fedge.wire import encode_vector
from tests.integration.conftest import FACTS
from tests.integration.test_async_jobs import small_delta

FLOAT32_MAX = float(np.finfo(np.float32).max)


def extreme_delta() -> bytes:
    return encode_vector(np.full(610, FLOAT32_MAX, np.float32))


def tasks(coordinator, count):
    devices = [coordinator.device() for _ in range(count)]
    checked_in = [device.check_in(FACTS) for device in devices]
    assert all(isinstance(task, Task) for task in checked_in)
    return list(zip(devices, checked_in, strict=True))


def test_an_upload_that_would_make_the_model_infinite_is_refused_and_its_lease_stays_usable(
    coordinator,
):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=1)
    (first, first_task), (second, second_task) = tasks(coordinator, 2)
    first.upload(first_task, extreme_delta(), num_examples=10)  # version 1: weights near max
    kept = coordinator.weights(job["id"], 1)

    with pytest.raises(ProtocolError) as refused:
        second.upload(second_task, extreme_delta(), num_examples=10)
    receipt = second.upload(second_task, small_delta(-1.0), num_examples=10)

    assert (refused.value.status, refused.value.reason) == (400, "would_overflow")
    assert "non-finite" in refused.value.message
    np.testing.assert_array_equal(coordinator.weights(job["id"], 1), kept)
    assert receipt.status == "accepted" and receipt.global_version == 2
    assert np.isfinite(coordinator.weights(job["id"], 2)).all()


def test_a_default_job_refuses_the_overflowing_upload_at_acceptance_and_keeps_the_buffer(
    coordinator,
):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=2)
    (a, a_task), (b, b_task), (c, c_task), (d, d_task) = tasks(coordinator, 4)
    a.upload(a_task, extreme_delta(), num_examples=10)
    b.upload(b_task, extreme_delta(), num_examples=10)  # version 1: weights near max

    with pytest.raises(ProtocolError) as refused:  # refused now, not at the next flush
        c.upload(c_task, extreme_delta(), num_examples=10)
    c.upload(c_task, small_delta(), num_examples=10)
    d.upload(d_task, small_delta(), num_examples=10)

    assert (refused.value.status, refused.value.reason) == (400, "would_overflow")
    assert [v["number"] for v in coordinator.versions(job["id"])] == [0, 1, 2]
    assert np.isfinite(coordinator.weights(job["id"], 2)).all()


def test_a_sync_report_that_would_make_the_model_infinite_is_refused(coordinator):
    job = coordinator.create_job(coordinator.publish_plan(), mode="sync", target=1)
    ((first, first_task),) = tasks(coordinator, 1)
    first.upload(first_task, extreme_delta(), num_examples=10)  # round 1 → version 1
    ((second, second_task),) = tasks(coordinator, 1)

    with pytest.raises(ProtocolError) as refused:
        second.upload(second_task, extreme_delta(), num_examples=10)

    assert (refused.value.status, refused.value.reason) == (400, "would_overflow")
    assert coordinator.job(job["id"])["current_version"] == 1
    assert np.isfinite(coordinator.weights(job["id"], 1)).all()
