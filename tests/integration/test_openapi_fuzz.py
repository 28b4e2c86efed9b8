"""Schemathesis, every check, over the OpenAPI spec of a real coordinator, authenticated."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from coordinator.api.app import create_app
from coordinator.settings import Settings
from fedge.admin_client import AdminClient
from tests.integration.conftest import ADMIN_TOKEN, serve

# Small enough that the whole run stays within about a minute and a half on two cores.
MAX_EXAMPLES = 8


def test_the_spec_holds_under_authenticated_fuzzing(tmp_path: Path, plans_dir: Path) -> None:
    # Prepare: a real coordinator with a published plan, a job and a registered device.
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'fuzz.db'}",
        admin_token=ADMIN_TOKEN,
        max_body_bytes=1_000_000,
        rate_limit_per_minute=100_000,
    )
    app = create_app(settings, background_sweep=False)
    server, thread, url = serve(app)
    try:
        with AdminClient(url, ADMIN_TOKEN) as admin:
            plan_id = int(admin.publish_plan(plans_dir / "synthetic_logreg.tflite")["id"])
        job = httpx.post(
            f"{url}/v1/admin/jobs",
            json={"name": "fuzzed", "plan_id": plan_id, "aggregation": {"mode": "async"}},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert job.status_code == 201, job.text
        device_token = httpx.post(f"{url}/v1/devices", json={"runtime": "fuzz"}).json()["token"]
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            f"""
[[operations]]
include-tag = "admin"
headers = {{ Authorization = "Bearer {ADMIN_TOKEN}" }}

[[operations]]
include-tag = "devices"
headers = {{ Authorization = "Bearer {device_token}" }}

# Schema-valid yet refused with 400, by content no OpenAPI schema can state: a manifest that
# does not describe the stored blobs, a body that is not the wire format, metrics not JSON.
[[operations]]
include-path-regex = '^/v1/(admin/plans|leases/[^/]+/update)$'
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429",
]
"""
        )

        # Execute: every phase, every check.
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(config),
                "--no-color",
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--workers",
                "1",
                "--seed",
                "1",
                "--suppress-health-check",
                "all",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
            cwd=tmp_path,
            check=False,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.engine.dispose()

    # Assert: no server error and no answer that breaks the spec.
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert generated is not None, run.stdout[-8000:]
    assert int(generated[1]) == int(generated[2]) > 0, run.stdout[-8000:]
