"""Several coordinator processes on one database serve one fleet correctly.

Two replicas, each with two uvicorn workers, share a database; every device checks in through
one replica and uploads through the other. State lives in the database under its transactions
and row locks, so no update is counted twice and no version is lost or forked.
"""

from __future__ import annotations

import time

import pytest

from tests.databases import fresh_database
from tests.integration.fleet import (
    ServerProcess,
    check_invariants,
    fleet_job,
    free_port,
    running_fleet,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_two_replicas_with_two_workers_each_count_every_update_once(tmp_path, plans_dir, kind):
    with fresh_database(kind, tmp_path) as db_url:
        replicas = [
            ServerProcess(db_url, free_port(), tmp_path / f"replica{i}.log", workers=2)
            for i in range(2)
        ]
        for replica in replicas:
            replica.start()
        try:
            with fleet_job(replicas[0].url, plans_dir, db_url, buffer_size=4) as (
                live,
                job,
                initial,
            ):
                with running_fleet([r.url for r in replicas], devices=8) as acknowledged:
                    time.sleep(6)
                final_version = live.job(job["id"])["current_version"]
                final = live.weights(job["id"], final_version)
        finally:
            for replica in replicas:
                replica.stop()

        assert len(acknowledged) >= 20, f"only {len(acknowledged)} uploads: too little to test"
        print(
            f"{kind}: {len(acknowledged)} uploads through 2 replicas x 2 workers, "
            f"{final_version} versions"
        )
        check_invariants(
            db_url, job["id"], initial, final, final_version, acknowledged, buffer_size=4
        )
