"""``scripts/local-fleet.sh``: three real agents on localhost train a real job to its end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_serve_logs import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_three_agents_on_localhost_train_the_job_to_its_last_version(plans_dir, tmp_path):
    env = {
        **os.environ,
        "FEDGE": str(Path(sys.executable).with_name("fedge")),
        "PYTHONPATH": str(ROOT),
    }
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "plans").symlink_to(plans_dir)

    script = str(ROOT / "scripts" / "local-fleet.sh")
    done = subprocess.run(
        [script, "--versions", "2", "--port", str(free_port()), "--dir", str(tmp_path / "fleet")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"job \d+: stopped 2", done.stdout)
    assert re.search(r"^\s+2\s+\d{4}-", done.stdout, re.MULTILINE)  # version 2 in the table
    for n in (1, 2, 3):  # each agent registered under its own state folder and got a task
        agent_log = (tmp_path / "fleet" / f"device-{n}" / "agent.log").read_text()
        assert "registered with" in agent_log and "task: lease" in agent_log, agent_log[-1000:]
        assert any((tmp_path / "fleet" / f"device-{n}" / "state").iterdir())
