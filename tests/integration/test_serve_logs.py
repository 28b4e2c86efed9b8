"""``fedge coordinator serve`` logs quietly by default and listens where FEDGE_HOST/PORT say."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_log(tmp_path, before: list[str], after: list[str]) -> tuple[str, int]:
    """Start serve on FEDGE_PORT, ask /healthz three times, stop it; its log and its port."""
    port = free_port()
    command = [sys.executable, "-m", "fedge.cli", *before, "coordinator", "serve", *after]
    env = os.environ | {
        "FEDGE_HOST": "127.0.0.1",
        "FEDGE_PORT": str(port),
        "FEDGE_DB_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "FEDGE_ADMIN_TOKEN": "an-admin-token-long-enough-for-the-check",
    }
    with (tmp_path / "serve.log").open("w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        answered = 0
        while answered < 3:
            try:
                answered += httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return (tmp_path / "serve.log").read_text(), port


def test_serve_listens_on_fedge_host_and_port_and_logs_no_request_or_alembic_lines(tmp_path):
    log, port = serve_log(tmp_path, [], [])

    assert f"Uvicorn running on http://127.0.0.1:{port}" in log
    assert "GET /healthz" not in log
    assert "alembic" not in log


@pytest.mark.parametrize(
    ("before", "after", "alembic"),
    [([], ["--access-log"], False), (["--log-level", "debug"], [], True)],
    ids=["access-log", "debug-before-the-subcommand"],
)
def test_request_lines_come_with_access_log_or_debug(tmp_path, before, after, alembic):
    log, _ = serve_log(tmp_path, before, after)

    assert log.count('"GET /healthz HTTP/1.1" 200') == 3
    assert ("alembic" in log) is alembic
