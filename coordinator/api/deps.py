"""Request dependencies, defined once as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db.models import Device
from coordinator.db.session import transaction
from coordinator.errors import Forbidden, Unauthorized
from coordinator.observability import Telemetry
from coordinator.ratelimit import RateLimiter
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


async def _bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    return token.strip()


Sessions = Annotated[sessionmaker[Session], Depends(_sessions)]
AppSettings = Annotated[Settings, Depends(_settings)]
AppClock = Annotated[Clock, Depends(_clock)]
BearerToken = Annotated[str, Depends(_bearer)]
AppTelemetry = Annotated[Telemetry, Depends(_telemetry)]


def _authenticated(
    request: Request, token: BearerToken, sessions: Sessions, clock: AppClock
) -> tuple[str, bool]:
    """Authenticate a device and charge its rate limit; the admin token is not a device.

    Returns the device id and whether its ``last_seen_at`` is due for a refresh.
    """
    if _is_admin_token(request, token):
        raise Forbidden("the admin token cannot act as a device")
    now = clock.now()
    with transaction(sessions, read_only=True) as session:
        device = devices.authenticate(session, token)
        device_id, stale = device.id, devices.needs_seen(device, now)
    limiter: RateLimiter = request.app.state.limiter
    limiter.charge(device_id, now=now)
    return device_id, stale


def _device_id(
    seen: Annotated[tuple[str, bool], Depends(_authenticated)], sessions: Sessions, clock: AppClock
) -> str:
    """The authenticated device's id, its ``last_seen_at`` refreshed (at most once a minute)."""
    device_id, stale = seen
    if stale:
        with transaction(sessions) as session:
            devices.mark_seen(session, device_id, now=clock.now())
    return device_id


async def _admin(request: Request, token: BearerToken) -> None:
    if not _is_admin_token(request, token):
        raise Forbidden("this endpoint needs the admin token")


def _is_admin_token(request: Request, token: str) -> bool:
    expected: str = request.app.state.admin_token
    return hmac.compare_digest(token.encode(), expected.encode())


DeviceId = Annotated[str, Depends(_device_id)]
# For a route whose own write transaction refreshes ``last_seen_at`` (check-in): one commit less.
SeenDevice = Annotated[tuple[str, bool], Depends(_authenticated)]
Admin = Depends(_admin)


def load_device(session: Session, device_id: str) -> Device:
    """The authenticated device inside the caller's transaction."""
    device = session.get(Device, device_id)
    if device is None:  # deleted between authentication and now
        raise Unauthorized("unknown device")
    return device
