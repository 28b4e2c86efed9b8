"""``fedge coordinator serve`` and its admin token: refused when weak, one token for all workers."""

import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

SERVE = [sys.executable, "-m", "fedge.cli", "coordinator", "serve", "--log-level", "warning"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**variables):
    env = {k: v for k, v in os.environ.items() if k != "FEDGE_ADMIN_TOKEN"}
    env.update(variables)
    return env


@pytest.mark.parametrize("token", ["", "x", "fifteen-chars.."])
def test_serve_refuses_a_weak_or_empty_admin_token_in_one_line(tmp_path, token):
    result = subprocess.run(
        [*SERVE, "--db", f"sqlite:///{tmp_path / 'db.sqlite'}", "--port", str(free_port())],
        env=environment(FEDGE_ADMIN_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "FEDGE_ADMIN_TOKEN" in lines[0]
    assert "secrets.token_urlsafe(32)" in lines[0]
    assert "Traceback" not in result.stderr


def test_two_workers_without_a_token_share_the_one_logged(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(
        [*SERVE, "--db", f"sqlite:///{tmp_path / 'db.sqlite'}", "--port", str(port), "--workers=2"],
        env=environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        log.seek(0)
        tokens = re.findall(r"this run's admin token: (\S+)", log.read())
        assert len(tokens) == 1, tokens

        statuses = [
            httpx.get(
                f"{url}/v1/admin/jobs",
                headers={"Authorization": f"Bearer {tokens[0]}", "Connection": "close"},
                timeout=10,
            ).status_code
            for _ in range(40)
        ]

        assert statuses == [200] * 40
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
