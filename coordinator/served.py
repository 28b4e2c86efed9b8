"""``fedge coordinator serve`` as a child process: start, wait for ``/healthz``, stop or SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServedCoordinator:
    """One coordinator server in its own process group, so its workers die with it.

    ``env`` replaces the inherited environment when given (``None``: this process's); the
    admin token and ``extra_env`` are laid over it. Output goes to ``log_path`` (appended).
    """

    def __init__(
        self,
        db_url: str,
        *,
        port: int | None = None,
        workers: int | None = None,
        admin_token: str | None = None,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_level: str = "warning",
        timeout: float = 60.0,
        poll_seconds: float = 0.05,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Describe the server; nothing starts before :meth:`start`."""
        self.db_url, self.workers, self.log_path = db_url, workers, log_path
        self.port = port if port is not None else free_port()
        self.admin_token, self.cwd, self.log_level = admin_token, cwd, log_level
        self.timeout, self.poll_seconds, self.extra_args = timeout, poll_seconds, extra_args
        self._env = dict(os.environ if env is None else env)
        if admin_token is not None:
            self._env["FEDGE_ADMIN_TOKEN"] = admin_token
        self._env.update(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts the server."""
        command = [sys.executable, "-m", "fedge.cli", "coordinator", "serve", "--db", self.db_url]
        command += ["--port", str(self.port)]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        return [*command, "--log-level", self.log_level, *self.extra_args]

    def start(self) -> float:
        """Start the server; return the seconds until ``/healthz`` answered 200."""
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: workers die with it
            )
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the coordinator exited with status {self.process.returncode}:\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() - started > self.timeout:
                self.kill()
                raise RuntimeError(
                    f"the coordinator did not answer {self.url}/healthz within "
                    f"{self.timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(self.poll_seconds)

    def log_tail(self, chars: int = 2000) -> str:
        """The last ``chars`` characters of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server and its workers at once, as a host crash would."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL what is left."""
        if not self.running:
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ServedCoordinator:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()
