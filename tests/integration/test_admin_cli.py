"""An operator drives a live coordinator with ``fedge admin``: tables, or --json for scripts."""

import hashlib
import json
import re

import numpy as np
import pytest

from fedge.cli import main
from fedge.wire import decode_vector
from tests.integration.conftest import ADMIN_TOKEN, FACTS


def fedge_admin(coordinator, capsys, *args):
    status = main(["admin", "--server", coordinator.url, "--token", ADMIN_TOKEN, "--json", *args])
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
    assert capsys.readouterr().err.startswith(
        "fedge: error: cannot reach http://127.0.0.1:9: [Errno 111]"
    )


def test_any_version_downloads_as_an_inference_only_model(coordinator):
    from ai_edge_litert.interpreter import Interpreter

    from coordinator.admin_client import AdminClient
    from device_sdk import PlanRunner
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


def fedge_admin_table(coordinator, capsys, *args):
    status = main(["admin", "--server", coordinator.url, "--token", ADMIN_TOKEN, *args])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out


ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def test_jobs_plans_and_versions_print_as_tables_with_iso_times(coordinator, capsys):
    plan_id = coordinator.publish_plan()
    job = coordinator.create_job(plan_id, mode="async", buffer_size=1)
    device = coordinator.device()
    device.upload(device.check_in(FACTS), _zero_delta(), num_examples=3)

    jobs = fedge_admin_table(coordinator, capsys, "jobs").splitlines()
    plans = fedge_admin_table(coordinator, capsys, "plans").splitlines()
    versions = fedge_admin_table(coordinator, capsys, "versions", str(job["id"])).splitlines()

    assert jobs[0].split() == ["ID", "NAME", "PLAN", "MODE", "STATUS", "VERSION"]
    assert jobs[1].split() == [str(job["id"]), "test", "job", str(plan_id), "async", "running", "1"]
    assert plans[0].split() == ["ID", "NAME", "PARAMS", "SHA256", "REGISTERED"]
    assert re.fullmatch(
        rf"\s*{plan_id}\s+synthetic_logreg\s+610\s+[0-9a-f]{{12}}\s+{ISO}", plans[1]
    )
    assert versions[0].split()[:4] == ["VERSION", "CREATED", "UPDATES", "EXAMPLES"]
    assert [line.split()[0] for line in versions[1:]] == ["0", "1"]
    assert re.match(rf"\s*1\s+{ISO}\s+1\s+3\s", versions[2])


def test_devices_lists_the_latest_seen_and_the_total_without_tokens(coordinator, capsys):
    first, second = coordinator.device(), coordinator.device()
    second.check_in(FACTS)

    listed = fedge_admin_table(coordinator, capsys, "devices", "--limit", "1").splitlines()
    status, out, _ = fedge_admin(coordinator, capsys, "devices")

    assert listed[0] == "2 devices registered; the 1 seen last:"
    assert listed[1].split() == ["ID", "REGISTERED", "LAST", "SEEN", "RUNTIME", "SDK"]
    assert re.fullmatch(rf"[0-9a-f-]{{36}}\s+{ISO}\s+{ISO}\s+test\s+-", listed[2])
    assert status == 0
    body = json.loads(out)
    assert body["total"] == 2 and len(body["devices"]) == 2
    assert set(body["devices"][0]) == {
        "id",
        "registered_at",
        "last_seen_at",
        "runtime",
        "sdk_version",
    }
    assert first.token not in out and second.token not in out


def test_a_device_limit_out_of_range_is_refused(coordinator):
    response = coordinator.admin.get("/v1/admin/devices", params={"limit": 0})

    assert response.status_code == 422


def test_download_saves_the_inference_model_or_the_weights(coordinator, capsys, tmp_path):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async")

    model = fedge_admin_table(
        coordinator, capsys, "download", str(job["id"]), "0", "--out", str(tmp_path / "m.tflite")
    )
    status, out, _ = fedge_admin(
        coordinator,
        capsys,
        "download",
        str(job["id"]),
        "0",
        "--weights",
        "--out",
        str(tmp_path / "w"),
    )

    assert status == 0
    data = (tmp_path / "m.tflite").read_bytes()
    assert model == f"wrote {tmp_path / 'm.tflite'} ({len(data):,} B)\n"
    assert data[4:8] == b"TFL3"  # a FlatBuffer with the TFLite identifier
    saved = json.loads(out)
    weights = (tmp_path / "w").read_bytes()
    assert saved == {
        "path": str(tmp_path / "w"),
        "bytes": len(weights),
        "sha256": hashlib.sha256(weights).hexdigest(),
    }
    np.testing.assert_array_equal(decode_vector(weights), coordinator.weights(job["id"], 0))


def test_server_token_and_json_work_after_the_subcommand_too(coordinator, capsys):
    coordinator.create_job(coordinator.publish_plan(), mode="async")

    status = main(["admin", "jobs", "--server", coordinator.url, "--token", ADMIN_TOKEN, "--json"])

    assert status == 0
    assert [job["status"] for job in json.loads(capsys.readouterr().out)] == ["running"]


def test_the_server_comes_from_fedge_server(coordinator, capsys, monkeypatch):
    monkeypatch.setenv("FEDGE_SERVER", coordinator.url)
    monkeypatch.setenv("FEDGE_ADMIN_TOKEN", ADMIN_TOKEN)

    status = main(["admin", "plans"])

    assert status == 0
    assert capsys.readouterr().out.split() == ["ID", "NAME", "PARAMS", "SHA256", "REGISTERED"]
