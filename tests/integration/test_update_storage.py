"""What the database keeps of an update once it is folded into a version."""

import numpy as np
from sqlalchemy import create_engine, text

from fedge.protocol import Task
from fedge.wire import encode_vector
from tests.integration.conftest import FACTS


def upload(coordinator, device, delta):
    task = device.check_in(FACTS)
    assert isinstance(task, Task), task
    return device.upload(task, encode_vector(delta), num_examples=10)


def stored(coordinator):
    engine = create_engine(coordinator.db_url)
    with engine.connect() as db:
        rows = db.execute(
            text(
                "SELECT u.version, b.size, length(b.data) FROM updates u "
                "JOIN blobs b ON b.sha256 = u.delta_sha256 ORDER BY u.id"
            )
        ).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_a_folded_updates_bytes_are_released_but_its_record_stays(coordinator):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=2)
    devices = [coordinator.device() for _ in range(3)]
    size = len(encode_vector(np.zeros(610, np.float32)))  # synthetic_logreg

    for k, device in enumerate(devices):
        upload(coordinator, device, np.full(610, 0.001 * (k + 1), np.float32))

    rows = stored(coordinator)
    assert rows[0][0] == rows[1][0] == 1  # folded into version 1: bytes released
    assert rows[0][1:] == (size, 0) and rows[1][1:] == (size, 0)
    assert rows[2] == (None, size, size)  # still waiting in the buffer: kept
    assert coordinator.job(job["id"])["current_version"] == 1


def test_identical_bytes_arriving_after_a_release_are_kept_and_folded(coordinator):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=2)
    same = np.full(610, 0.002, np.float32)
    devices = [coordinator.device() for _ in range(4)]

    for device in devices:  # four identical deltas: two versions from one content address
        assert upload(coordinator, device, same).status == "accepted"

    assert coordinator.job(job["id"])["current_version"] == 2
    final = coordinator.weights(job["id"], 2)
    initial = coordinator.weights(job["id"], 0)
    np.testing.assert_allclose(final - initial, 2 * same, atol=1e-6)


def test_a_job_can_keep_every_update_for_audit(coordinator):
    coordinator.create_job(
        coordinator.publish_plan(), mode="async", buffer_size=2, keep_updates=True
    )
    for k, device in enumerate(coordinator.device() for _ in range(2)):
        upload(coordinator, device, np.full(610, 0.01 * (k + 1), np.float32))

    assert all(length == size for _, size, length in stored(coordinator))
