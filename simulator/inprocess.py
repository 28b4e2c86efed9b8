"""The real coordinator in the simulator's process: its FastAPI app behind an ASGI transport.

Devices talk to it with the device SDK's own :class:`~device_sdk.client.CoordinatorClient` over
an :class:`httpx.BaseTransport` that hands each request to the app, so every request goes through
routing, validation, authentication, the services and the database exactly as over a socket —
without one. The app's clock is the simulator's :class:`~fedge.clock.ManualClock`, so leases,
deadlines and retry windows run in virtual time, and the lease sweep is a simulator event instead
of a background task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from coordinator.api.app import create_app
from coordinator.db.migrate import upgrade
from coordinator.db.session import transaction
from coordinator.services import devices
from coordinator.services.maintenance import sweep
from coordinator.settings import Settings
from fedge.clock import ManualClock

ADMIN_TOKEN = "simulator-admin-token"


class ASGIBridge(httpx.BaseTransport):
    """A synchronous httpx transport that runs each request on an ASGI app to completion.

    The app runs on an event loop of this thread's own, only while a request is in flight: the
    simulator makes one request at a time, and the app has no background tasks (its lease sweep
    is a simulator event), so nothing else needs the loop in between. For the same reason the
    app is built with ``inline_blocking``: its database work runs on that loop, not on a thread.
    """

    def __init__(self, app: Any) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._loop = asyncio.new_event_loop()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request through the app and return its buffered response."""
        request.read()

        async def roundtrip() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        return self._loop.run_until_complete(roundtrip())

    def close(self) -> None:
        """Close the event loop."""
        self._loop.close()


class InProcessCoordinator:
    """A coordinator on a SQLite file in ``workdir``, driven by ``clock``; a context manager."""

    base_url = "http://coordinator.sim"

    def __init__(
        self, workdir: Path, clock: ManualClock, *, inline_blocking: bool = True, **settings: Any
    ) -> None:
        self.clock = clock
        self.db_path = workdir / "coordinator.db"
        self.settings = Settings(
            db_url=f"sqlite:///{self.db_path}",
            admin_token=ADMIN_TOKEN,
            **settings,
        )
        self.app = create_app(
            self.settings, clock=clock, background_sweep=False, inline_blocking=inline_blocking
        )
        self.transport: ASGIBridge | None = None

    def __enter__(self) -> InProcessCoordinator:
        upgrade(self.app.state.engine)
        self.transport = ASGIBridge(self.app)
        return self

    def __exit__(self, *_: object) -> None:
        if self.transport is not None:
            self.transport.close()
        self.app.state.engine.dispose()

    def register_many(self, count: int, *, runtime: str, sdk_version: str) -> list[str]:
        """Register ``count`` devices through the coordinator's own service; return their tokens.

        A population that was registered before the run starts, in bulk transactions instead of
        one request per device (a million registrations would otherwise dominate the run).
        """
        tokens: list[str] = []
        now = self.clock.now()
        for start in range(0, count, 10_000):
            with transaction(self.app.state.sessions) as session:
                for _ in range(start, min(count, start + 10_000)):
                    _, token = devices.register(
                        session, runtime=runtime, sdk_version=sdk_version, now=now
                    )
                    tokens.append(token)
        return tokens

    def sweep(self) -> None:
        """Expire silent leases and close overdue rounds at the clock's current time."""
        sweep(self.app.state.sessions, now=self.clock.now())

    @contextlib.contextmanager
    def http(self, **headers: str) -> Iterator[httpx.Client]:
        """A plain httpx client bound to the app (for the admin API)."""
        if self.transport is None:
            raise RuntimeError("enter the coordinator before talking to it")
        with httpx.Client(
            base_url=self.base_url, transport=self.transport, headers=headers, timeout=60
        ) as client:
            yield client
