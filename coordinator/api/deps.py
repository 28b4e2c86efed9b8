"""Request dependencies, defined once as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from coordinator.api.limits import bearer_token
from coordinator.api.offload import Offload
from coordinator.db.models import Device
from coordinator.db.session import transaction
from coordinator.errors import Forbidden, Unauthorized
from coordinator.observability import Telemetry
from coordinator.ratelimit import DeviceRateLimit
from coordinator.services import devices
from coordinator.settings import Settings
from fedge.clock import Clock


async def _sessions(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    return factory


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def _telemetry(request: Request) -> Telemetry:
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


async def _offload(request: Request) -> Offload:
    offload: Offload = request.app.state.offload
    return offload


async def _bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    return bearer_token(authorization)


Sessions = Annotated[sessionmaker[Session], Depends(_sessions)]
AppSettings = Annotated[Settings, Depends(_settings)]
AppClock = Annotated[Clock, Depends(_clock)]
BearerToken = Annotated[str, Depends(_bearer)]
AppTelemetry = Annotated[Telemetry, Depends(_telemetry)]
# Blocking work (database, numpy) goes through this: a threadpool under uvicorn, inline in-process.
Blocking = Annotated[Offload, Depends(_offload)]


class DeviceCredentials:
    """A device's bearer token, checked against the database inside the route's transaction.

    A route that writes anyway (check-in, heartbeat, abort) authenticates in its own
    transaction: one transaction and one device lookup instead of two each. (Upload does not:
    it authenticates before it reads a body of up to ``max_body_bytes``.)
    """

    def __init__(self, token: str, limiter: DeviceRateLimit) -> None:
        self.token = token
        self.limiter = limiter

    def device(self, session: Session, *, now: float) -> Device:
        """The device holding the token, its rate limit charged and ``last_seen_at`` current."""
        device = devices.authenticate(session, self.token)
        self.limiter.charge(device.id, now=now)
        if devices.needs_seen(device, now):
            device.last_seen_at = now
        return device


async def _credentials(request: Request, token: BearerToken) -> DeviceCredentials:
    if _is_admin_token(request, token):
        raise Forbidden("the admin token cannot act as a device")
    return DeviceCredentials(token, request.app.state.limiter)


async def _device_id(
    request: Request, token: BearerToken, sessions: Sessions, clock: AppClock, offload: Blocking
) -> str:
    """Authenticate a device and charge its rate limit; the admin token is not a device.

    Its ``last_seen_at`` is refreshed too, at most once a minute, in a write of its own.
    """
    if _is_admin_token(request, token):
        raise Forbidden("the admin token cannot act as a device")
    now = clock.now()

    def authenticate() -> tuple[str, bool]:
        with transaction(sessions, read_only=True) as session:
            device = devices.authenticate(session, token)
            return device.id, devices.needs_seen(device, now)

    device_id, stale = await offload(authenticate)
    limiter: DeviceRateLimit = request.app.state.limiter
    limiter.charge(device_id, now=now)
    if stale:

        def mark_seen() -> None:
            with transaction(sessions) as session:
                devices.mark_seen(session, device_id, now=now)

        await offload(mark_seen)
    return device_id


async def _admin(request: Request, token: BearerToken) -> None:
    if not _is_admin_token(request, token):
        raise Forbidden("this endpoint needs the admin token")


def _is_admin_token(request: Request, token: str) -> bool:
    expected: str = request.app.state.admin_token
    return hmac.compare_digest(token.encode(), expected.encode())


def is_admin_token(request: Request, token: str) -> bool:
    """Whether ``token`` is this service's admin token (compared in constant time)."""
    return _is_admin_token(request, token)


DeviceId = Annotated[str, Depends(_device_id)]
# For a route that authenticates inside its own write transaction (check-in, heartbeat, abort).
Credentials = Annotated[DeviceCredentials, Depends(_credentials)]
Admin = Depends(_admin)


def load_device(session: Session, device_id: str) -> Device:
    """The authenticated device inside the caller's transaction."""
    device = session.get(Device, device_id)
    if device is None:  # deleted between authentication and now
        raise Unauthorized("unknown device")
    return device
