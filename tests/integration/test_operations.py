"""What operators see: Prometheus metrics, a job's metrics history, rate limits, upgrades."""

import httpx
import numpy as np
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from coordinator.db.migrate import alembic_config, upgrade
from coordinator.db.session import make_engine
from device_sdk.errors import ProtocolError
from fedge.protocol import Task
from fedge.wire import MEDIA_TYPE, encode_vector
from tests.databases import fresh_database
from tests.integration.conftest import FACTS


def delta(value: float) -> bytes:
    return encode_vector(np.full(610, value, np.float32))


def run_one_version(coordinator, **config):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=2, **config)
    devices = [coordinator.device() for _ in range(3)]
    tasks = [d.check_in(FACTS) for d in devices]
    devices[0].upload(tasks[0], delta(0.1), num_examples=10, metrics={"eval_accuracy": 0.5})
    devices[1].upload(tasks[1], delta(0.3), num_examples=30, metrics={"eval_accuracy": 0.7})
    return job, devices, tasks


def test_metrics_endpoint_reports_updates_rejections_leases_versions_and_staleness(coordinator):
    job, devices, tasks = run_one_version(coordinator, max_update_norm=10.0)
    httpx.put(
        f"{coordinator.url}/v1/leases/{tasks[2].lease_id}/update",
        content=encode_vector(np.full(610, np.nan, np.float32)),
        headers={
            "Authorization": f"Bearer {devices[2].token}",
            "X-Fedge-Base-Version": "0",
            "X-Fedge-Num-Examples": "1",
            "Content-Type": MEDIA_TYPE,
        },
    )

    text_format = httpx.get(f"{coordinator.url}/metrics").text

    assert f'fedge_updates_accepted_total{{job="{job["id"]}"}} 2.0' in text_format
    assert 'fedge_updates_rejected_total{reason="non_finite"} 1.0' in text_format
    assert 'fedge_leases{status="completed"} 2.0' in text_format
    assert f'fedge_global_version{{job="{job["id"]}",status="running"}} 1.0' in text_format
    assert 'fedge_update_staleness_bucket{le="0"} 2.0' in text_format
    assert "fedge_check_ins_total 3.0" in text_format
    assert "fedge_request_seconds_count" in text_format


def test_job_metrics_history_lists_each_version_with_its_divergence_signals(coordinator):
    job, _, _ = run_one_version(coordinator)

    history = coordinator.admin.get(f"/v1/admin/jobs/{job['id']}/metrics").json()

    first = history["versions"][1]
    assert first["accepted"] == 2 and first["examples"] == 40
    norms = [np.linalg.norm(np.full(610, v, np.float32)) for v in (0.1, 0.3)]
    assert first["update_norm_mean"] == pytest.approx(np.mean(norms), rel=1e-5)
    assert first["update_norm_variance"] == pytest.approx(np.var(norms), rel=1e-4)
    assert first["mean_staleness"] == 0.0
    assert first["aggregation_seconds"] > 0
    # Devices evaluated version 0 before training: the example-weighted mean is reported there.
    assert history["versions"][0]["eval_accuracy"] == pytest.approx((0.5 * 10 + 0.7 * 30) / 40)
    assert history["leases"] == {"completed": 2, "active": 1}


def test_a_device_over_its_rate_limit_gets_429_until_the_minute_has_passed(coordinator):
    coordinator.create_job(coordinator.publish_plan(), mode="async")
    device = coordinator.device()
    limiter = None
    for _ in range(601):
        try:
            device.check_in(FACTS)
        except ProtocolError as refused:
            limiter = refused
            break

    assert limiter is not None, "600 requests within a frozen minute were all served"
    assert limiter.status == 429
    assert "more than 600 requests a minute" in limiter.message
    coordinator.clock.advance(60)
    assert isinstance(device.check_in(FACTS), Task)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_upgrading_the_schema_keeps_existing_data(tmp_path, kind):
    with fresh_database(kind, tmp_path) as db_url:
        engine = make_engine(db_url)
        upgrade(engine, "0001")
        with engine.begin() as db:
            db.execute(text("INSERT INTO blobs VALUES ('a' , 1, :d, 0)"), {"d": b"x"})
        upgrade(engine)  # to head

        with engine.connect() as db:
            assert db.execute(text("SELECT size FROM blobs WHERE sha256 = 'a'")).scalar() == 1
        columns = {c["name"] for c in inspect(engine).get_columns("versions")}
        assert "aggregation_seconds" in columns
        engine.dispose()


def test_restarting_on_an_existing_database_is_a_no_op_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = create_engine(url)
    upgrade(engine)

    upgrade(engine)

    with engine.connect() as db:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert db.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    engine.dispose()
