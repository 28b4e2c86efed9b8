"""Several coordinator processes on one database serve one fleet correctly.

Two replicas, each with two uvicorn workers, share a database; every device checks in through
one replica and uploads through the other. State lives in the database under its transactions
and row locks, so no update is counted twice and no version is lost or forked.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.databases import fresh_database
from tests.integration.conftest import ADMIN_TOKEN, LiveCoordinator
from tests.integration.fleet import ServerProcess, check_invariants, device_loop, free_port

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
            admin = httpx.Client(
                base_url=replicas[0].url,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=10,
            )
            live = LiveCoordinator(
                url=replicas[0].url, clock=None, admin=admin, plans_dir=plans_dir, db_url=db_url
            )  # type: ignore[arg-type]
            job = live.create_job(
                live.publish_plan(),
                mode="async",
                concurrency=8,
                buffer_size=4,
                max_staleness=1000,
                staleness="constant",
            )
            initial = live.weights(job["id"], 0)
            acknowledged: dict[str, str] = {}
            stop, lock = threading.Event(), threading.Lock()
            urls = [r.url for r in replicas]
            devices = [
                threading.Thread(
                    target=device_loop, args=(urls, i, acknowledged, stop, lock), daemon=True
                )
                for i in range(8)
            ]
            for thread in devices:
                thread.start()
            time.sleep(6)
            stop.set()
            for thread in devices:
                thread.join(timeout=30)
            final_version = live.job(job["id"])["current_version"]
            final = live.weights(job["id"], final_version)
            admin.close()
        finally:
            for replica in replicas:
                replica.stop()

        assert len(acknowledged) >= 20, (
            f"only {len(acknowledged)} uploads: too little concurrency to test"
        )
        print(
            f"{kind}: {len(acknowledged)} uploads through 2 replicas x 2 workers, "
            f"{final_version} versions"
        )
        check_invariants(
            db_url, job["id"], initial, final, final_version, acknowledged, buffer_size=4
        )
