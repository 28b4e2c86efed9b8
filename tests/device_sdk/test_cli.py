"""``fedge device run`` as a process: bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def device_run(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    """``python -m device_sdk.cli device run ARGS`` from ``tmp_path``; the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "device_sdk.cli", "device", "run", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=60,
    )


def test_a_server_url_without_a_scheme_is_one_line_at_start(tmp_path):
    done = device_run(tmp_path, "--server", "coordinator:8000", "--data", str(tmp_path))

    assert done.returncode == 2
    assert done.stderr == (
        "fedge device run: error: the server URL 'coordinator:8000' needs http:// or https:// "
        "and a host, e.g. http://coordinator:8000\n"
    )
    assert not (tmp_path / "state").exists()


def test_a_missing_example_store_is_one_line(tmp_path):
    done = device_run(
        tmp_path,
        *("--server", "http://127.0.0.1:9", "--data", str(tmp_path / "absent")),
        *("--state-dir", str(tmp_path / "state")),
    )

    assert done.returncode == 2
    assert done.stderr.endswith(
        f"fedge: error: {tmp_path / 'absent'} is neither an example store file nor a directory "
        "of example shards\n"
    )
    assert "Traceback" not in done.stderr


def test_an_unknown_log_level_is_one_line_naming_the_choices(tmp_path):
    done = device_run(tmp_path, "--server", "http://x", "--data", "d", "--log-level", "verbose")

    assert done.returncode == 2
    assert done.stderr == (
        "fedge device run: error: argument --log-level: invalid choice: 'verbose' (choose from "
        "'debug', 'info', 'warning', 'error') (see fedge device run --help)\n"
    )


def test_the_server_comes_from_fedge_server_when_no_flag_names_it(tmp_path):
    done = device_run(tmp_path, "--data", "d", env={"FEDGE_SERVER": "coordinator:8000"})

    assert done.returncode == 2
    assert "the server URL 'coordinator:8000' needs http://" in done.stderr


def test_without_a_server_flag_or_fedge_server_the_flag_is_required(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FEDGE_SERVER"}
    done = subprocess.run(
        [sys.executable, "-m", "device_sdk.cli", "device", "run", "--data", "d"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )

    assert done.returncode == 2
    assert "the following arguments are required: --server" in done.stderr
    assert done.stderr.count("\n") == 1


def test_help_says_which_exit_status_means_every_task_failed(tmp_path):
    done = device_run(tmp_path, "--help")

    flat = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "Exit status:" in flat and "1 when every task it ran failed" in flat
