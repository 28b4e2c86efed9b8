"""An operator drives a live coordinator with ``fedge admin``."""

import json

import numpy as np
import pytest

from fedge.cli import main
from tests.integration.conftest import ADMIN_TOKEN, FACTS


def fedge_admin(coordinator, capsys, *args):
    status = main(["admin", "--server", coordinator.url, "--token", ADMIN_TOKEN, *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_publish_a_plan_create_a_job_and_watch_it_make_a_version(coordinator, capsys, tmp_path):
    status, out, _ = fedge_admin(
        coordinator, capsys, "publish-plan", str(coordinator.plans_dir / "synthetic_logreg.tflite")
    )
    assert status == 0
    plan_id = json.loads(out)["id"]
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"aggregation": {"buffer_size": 1}, "task": {"local_epochs": 2}}))

    status, out, _ = fedge_admin(
        coordinator, capsys, "create-job", "--plan-id", str(plan_id), "--config", str(config)
    )
    assert status == 0
    job = json.loads(out)
    assert job["config"]["task"]["local_epochs"] == 2

    device = coordinator.device()
    task = device.check_in(FACTS)
    device.upload(task, _zero_delta(), num_examples=3)

    status, out, _ = fedge_admin(coordinator, capsys, "versions", str(job["id"]))
    assert [v["number"] for v in json.loads(out)] == [0, 1]
    status, out, _ = fedge_admin(coordinator, capsys, "pause", str(job["id"]))
    assert json.loads(out)["status"] == "paused"


def _zero_delta() -> bytes:
    import numpy as np

    from fedge.wire import encode_vector

    return encode_vector(np.zeros(610, np.float32))


def test_a_wrong_admin_token_is_one_line_on_stderr(coordinator, capsys):
    status = main(["admin", "--server", coordinator.url, "--token", "nope", "versions", "1"])

    assert status == 2
    assert (
        "coordinator answered 403: this endpoint needs the admin token" in capsys.readouterr().err
    )


@pytest.mark.parametrize("action", ["resume"])
def test_an_impossible_transition_is_reported(coordinator, capsys, action):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async")

    status, _, err = fedge_admin(coordinator, capsys, action, str(job["id"]))

    assert status == 2
    assert "cannot resume job" in err and "it is running" in err


def test_an_unreachable_server_is_reported_without_a_traceback(capsys):
    status = main(["admin", "--server", "http://127.0.0.1:9", "--token", "t", "versions", "1"])

    assert status == 2
    assert "cannot reach" in capsys.readouterr().err


def test_any_version_downloads_as_an_inference_only_model(coordinator):
    from ai_edge_litert.interpreter import Interpreter

    from device_sdk import PlanRunner
    from fedge.admin_client import AdminClient
    from tests.integration.conftest import ADMIN_TOKEN

    job = coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=1)
    device = coordinator.device()
    device.upload(device.check_in(FACTS), _zero_delta(), num_examples=3)
    runner = PlanRunner.from_files(coordinator.plans_dir / "synthetic_logreg.tflite")
    x = np.random.default_rng(0).random((4, 60), dtype=np.float32)

    with AdminClient(coordinator.url, ADMIN_TOKEN) as admin:
        model = admin.inference_model(job["id"], 1)

    runner.set_weights(coordinator.weights(job["id"], 1))
    served = Interpreter(model_content=model).get_signature_runner("serving_default")
    np.testing.assert_allclose(served(x=x)["probabilities"], runner.infer(x), atol=1e-6)
