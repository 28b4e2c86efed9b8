"""SIGKILL the coordinator mid-run, restart it, and check that nothing accepted was lost.

The server runs as a real ``fedge coordinator serve`` process; scripted devices keep checking
in and uploading (retrying through connection errors, as devices do) while it is killed with
SIGKILL at moments nobody chose and restarted from its database. Afterwards:

- it was serving again after each restart (the times are printed, not asserted);
- every upload a device saw acknowledged is stored exactly once (one update per lease);
- every stored update went into exactly one version, or is still pending in the buffer;
- versions are numbered 0..N without gaps, and the final weights equal the initial weights plus
  exactly the mean deltas of each version's updates: nothing counted twice, nothing lost.
"""

from __future__ import annotations

import time

import numpy as np
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


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sigkill_at_any_moment_loses_nothing_and_counts_nothing_twice(tmp_path, plans_dir, kind):
    with fresh_database(kind, tmp_path) as db_url:
        server = ServerProcess(db_url, free_port(), tmp_path / "server.log")
        server.start()
        try:
            with fleet_job(server.url, plans_dir, db_url, buffer_size=3) as (live, job, initial):
                restarts = []
                with running_fleet(server.url, devices=6) as acknowledged:
                    kill_rng = np.random.default_rng(5)
                    for _ in range(3):
                        time.sleep(float(kill_rng.uniform(0.5, 2.0)))  # a moment nobody chose
                        server.kill()
                        restarts.append(server.start())
                    time.sleep(1.5)
                final_version = live.job(job["id"])["current_version"]
                final = live.weights(job["id"], final_version)
        finally:
            server.stop()

        assert len(acknowledged) >= 10, "the fleet made too little progress to test anything"
        print(
            f"{kind}: restarts took {[round(r, 2) for r in restarts]} s; "
            f"{len(acknowledged)} uploads acknowledged"
        )
        check_invariants(
            db_url, job["id"], initial, final, final_version, acknowledged, buffer_size=3
        )
