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
from coordinator.services.memo import CommittedCache, scope_of, scope_of_bind
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


async def _arrived(request: Request) -> float:
    """When the request reached the app (stamped by api/shedding.py's middleware)."""
    arrived = getattr(request.state, "arrived", None)
    if isinstance(arrived, float):
        return arrived
    clock: Clock = request.app.state.clock
    return clock.now()


async def _bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    return bearer_token(authorization)


Sessions = Annotated[sessionmaker[Session], Depends(_sessions)]
AppSettings = Annotated[Settings, Depends(_settings)]
AppClock = Annotated[Clock, Depends(_clock)]
BearerToken = Annotated[str, Depends(_bearer)]
AppTelemetry = Annotated[Telemetry, Depends(_telemetry)]
# Blocking work (database, numpy) goes through this: a threadpool under uvicorn, inline in-process.
Blocking = Annotated[Offload, Depends(_offload)]
# When the request arrived: a working device's liveness is judged then, not after the queue.
Arrived = Annotated[float, Depends(_arrived)]


# A device's token digest -> its id, once a transaction that authenticated it committed. A
# token never changes hands, so an entry can only be stale for a device deleted since: such a
# request is still refused, by the authentication inside its own transaction.
_known_tokens = CommittedCache(100_000, lambda _: 1)


class DeviceCredentials:
    """A device's bearer token, checked against the database inside the route's transaction.

    A route authenticates in its own transaction: one transaction and one device lookup instead
    of two each — a write for check-in, heartbeat and abort (:meth:`device`), a read for the
    downloads (:meth:`reader`).
    """

    def __init__(self, token: str, limiter: DeviceRateLimit) -> None:
        self.token = token
        self.limiter = limiter

    def device(self, session: Session, *, now: float) -> Device:
        """The device holding the token, its rate limit charged and ``last_seen_at`` current."""
        device = _authenticate(session, self.token)
        self.limiter.charge(device.id, now=now)
        if devices.needs_seen(device, now):
            device.last_seen_at = now
        return device

    def reader(self, session: Session, *, now: float) -> tuple[str, bool]:
        """In a read-only transaction: the device's id, charged, and whether it needs marking seen.

        The caller then marks it seen (:func:`mark_seen`) after its read, at most once a minute.
        """
        device = _authenticate(session, self.token)
        self.limiter.charge(device.id, now=now)
        return device.id, devices.needs_seen(device, now)


class UploadCredentials:
    """A device's token, known before an upload's body is read and checked again inside its write.

    The first check only decides whether a body of up to ``max_body_bytes`` is worth reading: a
    token some committed transaction authenticated costs no database round trip, and the rate
    limit is charged then. :meth:`device` is the authentication that counts, in the upload's
    own transaction — so an upload is one transaction, not a read and then a write.
    """

    def __init__(self, token: str, device_id: str) -> None:
        self.token = token
        self.device_id = device_id

    def device(self, session: Session, *, now: float) -> Device:
        """The device holding the token, ``last_seen_at`` current, inside the caller's write."""
        device = _authenticate(session, self.token)
        if device.id != self.device_id:  # pragma: no cover - a token never changes hands
            raise Unauthorized("unknown device token; register again to get one")
        if devices.needs_seen(device, now):
            device.last_seen_at = now
        return device


def _authenticate(session: Session, token: str) -> Device:
    device = devices.authenticate(session, token)
    engine = scope_of(session)
    if engine is not None:
        _known_tokens.publish_after_commit(session, engine, devices.token_digest(token), device.id)
    return device


def mark_seen(sessions: sessionmaker[Session], device_id: str, *, now: float) -> None:
    """Record a request of ``device_id`` at ``now`` in a write of its own (after a read)."""
    with transaction(sessions) as session:
        devices.mark_seen(session, device_id, now=now)


async def _credentials(request: Request, token: BearerToken) -> DeviceCredentials:
    if _is_admin_token(request, token):
        raise Forbidden("the admin token cannot act as a device")
    return DeviceCredentials(token, request.app.state.limiter)


async def _upload_credentials(
    request: Request, token: BearerToken, sessions: Sessions, clock: AppClock, offload: Blocking
) -> UploadCredentials:
    """Authenticate a device before its upload's body is read, and charge its rate limit."""
    if _is_admin_token(request, token):
        raise Forbidden("the admin token cannot act as a device")
    engine = scope_of_bind(sessions.kw.get("bind"))
    known = None if engine is None else _known_tokens.lookup(engine, devices.token_digest(token))

    def authenticate() -> str:
        with transaction(sessions, read_only=True) as session:
            return _authenticate(session, token).id

    device_id: str = known if isinstance(known, str) else await offload.priority(authenticate)
    limiter: DeviceRateLimit = request.app.state.limiter
    limiter.charge(device_id, now=clock.now())
    return UploadCredentials(token, device_id)


async def _admin(request: Request, token: BearerToken) -> None:
    if not _is_admin_token(request, token):
        raise Forbidden("this endpoint needs the admin token")


def _is_admin_token(request: Request, token: str) -> bool:
    expected: str = request.app.state.admin_token
    return hmac.compare_digest(token.encode(), expected.encode())


def is_admin_token(request: Request, token: str) -> bool:
    """Whether ``token`` is this service's admin token (compared in constant time)."""
    return _is_admin_token(request, token)


# For a route that authenticates inside its own transaction (check-in, heartbeat, abort, downloads).
Credentials = Annotated[DeviceCredentials, Depends(_credentials)]
# For the upload: known before its body is read, authenticated again inside its write.
Uploader = Annotated[UploadCredentials, Depends(_upload_credentials)]
Admin = Depends(_admin)
