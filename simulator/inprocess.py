"""The real coordinator in the simulator's process: its FastAPI app behind an ASGI transport.

Devices talk to it with the device SDK's own :class:`~device_sdk.client.CoordinatorClient` over
an :class:`httpx.BaseTransport` that hands each request to the app, so every request goes through
routing, validation, authentication, the services and the database exactly as over a socket —
without one. The app's clock is the simulator's :class:`~fedge.clock.ManualClock`, so leases,
deadlines and retry windows run in virtual time, and the lease sweep is a simulator event instead
of a background task.

The simulator makes one request at a time, so its database work is grouped: every request's
transaction is a savepoint of one transaction on one connection (SQLAlchemy's "Joining a Session
into an External Transaction"), which commits before an upload is answered — an update is
acknowledged only once the transaction that records it has committed, as over a socket — and
otherwise every :data:`GROUP_REQUESTS` requests and at the end. A refused request rolls back its
own savepoint only. What a device was told in between (a task, a heartbeat's extension) would be
lost with the process, exactly as the devices told it would: one process holds both.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from coordinator.api.app import create_app
from coordinator.db.migrate import upgrade
from coordinator.db.session import make_engine, transaction
from coordinator.services import devices
from coordinator.services.maintenance import sweep
from coordinator.services.memo import SHARED, forget
from coordinator.settings import Settings
from fedge import protocol
from fedge.clock import ManualClock

ADMIN_TOKEN = "simulator-admin-token"
# The longest run of requests one grouped transaction holds before it commits anyway.
GROUP_REQUESTS = 1_000
_UPLOAD = re.compile(
    "^" + re.escape(protocol.UPDATE).replace(re.escape("{lease_id}"), "[^/]+") + "$"
)


class GroupedTransaction:
    """One connection whose transaction spans many requests; each request's is a savepoint.

    :attr:`sessions` is the factory the app uses: its sessions join the open transaction with
    ``join_transaction_mode="create_savepoint"``, so their commits release a savepoint and their
    rollbacks undo their own work only. :meth:`commit` makes everything so far durable.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connection = engine.connect()
        self.connection.info[SHARED] = True  # memos serve it as they serve the engine
        self.sessions: sessionmaker[Session] = sessionmaker(
            bind=self.connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        self.pending = 0

    def open(self) -> None:
        """Begin the grouped transaction if none is open (before each piece of work)."""
        if not self.connection.in_transaction():
            self.connection.begin()
        self.pending += 1

    def commit(self) -> None:
        """Commit what the group holds."""
        if self.connection.in_transaction():
            self.connection.commit()
        self.pending = 0

    def abandon(self) -> None:
        """Undo everything since the last commit: a request was cut short (Ctrl-C) mid-way.

        The interrupted request may have left its savepoint, or the connection, unusable; the
        last commit (the latest upload's, before its receipt) is the state nobody was lied to
        about, so the group goes back to it.
        """
        if self.connection.in_transaction() or self.connection.invalidated:
            self.connection.rollback()
        forget(self.engine)  # rows read inside it may never have been committed
        self.pending = 0

    def close(self, *, commit: bool) -> None:
        """Commit (or roll back) what is left and give the connection back."""
        if commit:
            self.commit()
        elif self.connection.in_transaction():
            self.connection.rollback()
            forget(self.engine)  # rows read inside it may never have been committed
        self.connection.close()


class ASGIBridge(httpx.BaseTransport):
    """A synchronous httpx transport that runs each request on an ASGI app to completion.

    The app runs on an event loop of this thread's own, only while a request is in flight: the
    simulator makes one request at a time, and the app has no background tasks (its lease sweep
    is a simulator event), so nothing else needs the loop in between. For the same reason the
    app is built with ``inline_blocking``: its database work runs on that loop, not on a thread.
    """

    def __init__(self, app: Any, group: GroupedTransaction | None = None) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._loop = asyncio.new_event_loop()
        self._group = group

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request through the app and return its buffered response."""
        request.read()

        async def roundtrip() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        group = self._group
        if group is not None:
            group.open()
        try:
            response = self._loop.run_until_complete(roundtrip())
        except KeyboardInterrupt:  # Ctrl-C mid-request: finish it off, then undo its work
            self._cancel_pending()
            if group is not None:
                group.abandon()
            raise
        if group is not None and (
            _UPLOAD.match(request.url.path) or group.pending >= GROUP_REQUESTS
        ):
            group.commit()  # before the device reads its receipt
        return response

    def _cancel_pending(self) -> None:
        """Cancel what the interrupted request left on the loop, so it never runs on later."""
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    def close(self) -> None:
        """Close the event loop."""
        self._loop.close()


class InProcessCoordinator:
    """A coordinator on a SQLite file in ``workdir``, driven by ``clock``; a context manager."""

    base_url = "http://coordinator.sim"

    def __init__(
        self,
        workdir: Path,
        clock: ManualClock,
        *,
        inline_blocking: bool = True,
        group_transactions: bool = True,
        **settings: Any,
    ) -> None:
        self.clock = clock
        self.db_path = workdir / "coordinator.db"
        self.settings = Settings(
            db_url=f"sqlite:///{self.db_path}",
            admin_token=ADMIN_TOKEN,
            **settings,
        )
        engine = make_engine(self.settings.db_url)
        self.group = GroupedTransaction(engine) if group_transactions else None
        self.app = create_app(
            self.settings,
            clock=clock,
            engine=engine,
            background_sweep=False,
            inline_blocking=inline_blocking,
            sessions=None if self.group is None else self.group.sessions,
        )
        self.transport: ASGIBridge | None = None

    def __enter__(self) -> InProcessCoordinator:
        upgrade(self.app.state.engine)
        self.transport = ASGIBridge(self.app, self.group)
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.group is not None:  # what ran is kept, Ctrl-C included; a crash's is not
            self.group.close(commit=kind is None or issubclass(kind, KeyboardInterrupt))
        self.app.state.engine.dispose()

    def register_many(self, count: int, *, runtime: str, sdk_version: str) -> list[str]:
        """Register ``count`` devices through the coordinator's own service; return their tokens.

        A population that was registered before the run starts, in bulk transactions instead of
        one request per device (a million registrations would otherwise dominate the run).
        """
        tokens: list[str] = []
        now = self.clock.now()
        for start in range(0, count, 10_000):
            if self.group is not None:
                self.group.open()
            with transaction(self.app.state.sessions) as session:
                for _ in range(start, min(count, start + 10_000)):
                    _, token = devices.register(
                        session, runtime=runtime, sdk_version=sdk_version, now=now
                    )
                    tokens.append(token)
            if self.group is not None:
                self.group.commit()
        return tokens

    def sweep(self) -> None:
        """Expire silent leases and close overdue rounds at the clock's current time."""
        if self.group is not None:
            self.group.open()
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
