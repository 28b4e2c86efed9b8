"""SIGKILL a DP coordinator mid-run: the privacy ledger equals the uninterrupted run's.

The ledger is stored in the transaction that publishes the version it accounts for, so a
kill at any moment can neither lose a privacy event (a version published without its cost)
nor count one twice (a version's cost recorded without it, then again after the restart).
A real ``fedge coordinator serve`` process is killed with SIGKILL three times while scripted
devices upload; afterwards the stored ledger must be exactly the ledger of that many versions
composed one after another, and each version's ε what a fresh accountant says for its number.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from coordinator.privacy import PrivacyAccountant, PrivacyConfig
from coordinator.privacy.ledger import PrivacyLedger
from tests.databases import fresh_database
from tests.integration.conftest import ADMIN_TOKEN, LiveCoordinator
from tests.integration.fleet import ServerProcess, free_port, running_fleet

pytestmark = pytest.mark.slow

BUFFER = 3
PRIVACY: dict[str, Any] = {
    "mechanism": "gaussian",
    "participation": {"model": "capped", "population": 1000, "window": 1},
    "noise_multiplier": 1.0,
    "delta": 1e-6,
    "epsilon_max": 1000.0,  # the run is about the ledger, not about stopping (ε(40) ≈ 40)
    "clipping": {"kind": "fixed", "clip_norm": 1.0},  # the fleet's deltas have norm ≈ 0.25
}


def _stored(db_url: str, job_id: int) -> tuple[dict[str, Any], list[Any], set[str]]:
    engine = create_engine(db_url)
    with engine.connect() as db:
        state = db.execute(
            text("SELECT privacy_state FROM jobs WHERE id = :j"), {"j": job_id}
        ).scalar_one()
        versions = db.execute(
            text(
                "SELECT number, num_updates, privacy FROM versions WHERE job_id = :j "
                "ORDER BY number"
            ),
            {"j": job_id},
        ).all()
        leases = {row[0] for row in db.execute(text("SELECT lease_id FROM updates"))}
    engine.dispose()
    as_dict = state if isinstance(state, dict) else json.loads(state)
    return as_dict, list(versions), leases


def _json(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


def _wait_for_version(live: LiveCoordinator, job_id: int, number: int) -> None:
    """Until the job has published version ``number`` (the fleet is slow on a loaded machine)."""
    deadline = time.monotonic() + 180
    while live.job(job_id)["current_version"] < number:
        assert time.monotonic() < deadline, f"no version {number} within 180 s"
        time.sleep(0.2)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sigkill_never_loses_or_double_counts_a_privacy_event(tmp_path, plans_dir, kind):
    with fresh_database(kind, tmp_path) as db_url:
        server = ServerProcess(db_url, free_port(), tmp_path / "server.log")
        server.start()
        try:
            admin = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=120
            )
            live = LiveCoordinator(
                url=server.url, clock=None, admin=admin, plans_dir=plans_dir, db_url=db_url
            )
            created = admin.post(
                "/v1/admin/jobs",
                json={
                    "name": "dp restart",
                    "plan_id": live.publish_plan(),
                    "aggregation": {
                        "mode": "async",
                        "concurrency": 8,
                        "buffer_size": BUFFER,
                        "max_staleness": 1000,
                        "weighting": "uniform",
                    },
                    "privacy": PRIVACY,
                    "max_versions": 40,  # bounds the budget search at creation
                },
            )
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            with running_fleet(server.url, devices=6) as acknowledged:
                _wait_for_version(live, job_id, 2)
                kill_rng = np.random.default_rng(11)
                for _ in range(3):
                    time.sleep(float(kill_rng.uniform(0.5, 2.0)))  # a moment nobody chose
                    server.kill()
                    server.start()
                _wait_for_version(live, job_id, live.job(job_id)["current_version"] + 2)
            admin.close()
        finally:
            server.stop()

        state, versions, stored = _stored(db_url, job_id)

    published = versions[-1].number
    assert published >= 3, "the fleet made too little progress to test anything"
    assert not [k for k in acknowledged if k.startswith("server-error:")], "a 5xx answer"
    assert set(acknowledged) <= stored, "an acknowledged upload was lost"
    accountant = PrivacyAccountant(PrivacyConfig.model_validate(PRIVACY))
    uninterrupted = PrivacyLedger()
    for _ in range(published):
        uninterrupted = accountant.record_version(uninterrupted)
    ledger = PrivacyLedger.from_json(state["ledger"])
    assert ledger == uninterrupted
    assert ledger.versions == published
    for version in versions[1:]:
        privacy = _json(version.privacy)
        assert privacy["epsilon"] == pytest.approx(accountant.epsilon_after(version.number))
        assert privacy["n_actual"] == version.num_updates == BUFFER
    assert state["epsilon"]["epsilon"] == _json(versions[-1].privacy)["epsilon"]
