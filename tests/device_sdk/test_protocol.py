"""The device's view of protocol messages."""

from device_sdk.protocol import Task


def test_a_task_with_fields_this_sdk_does_not_know_still_parses():
    # A newer coordinator may add fields; devices already in the field must keep working.
    raw = {
        "lease_id": "l",
        "job_id": 1,
        "plan_sha256": "p" * 64,
        "plan_url": "/v1/plans/p",
        "global_version": 0,
        "weights_url": "/w",
        "weights_sha256": "w" * 64,
        "hparams": {
            "local_epochs": 1,
            "batch_size": 8,
            "learning_rate": 0.1,
            "momentum": 0.0,
            "mu": 0.0,
            "warmup": 3,
        },
        "deadline": 10.0,
        "round": None,
        "heartbeat_seconds": 30.0,
        "priority": "high",
    }

    task = Task.from_json(raw)

    assert task.heartbeat_seconds == 30.0
    assert task.hparams.local_epochs == 1
