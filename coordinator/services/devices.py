"""Device registration and bearer-token authentication."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from coordinator.db.models import Device
from coordinator.errors import Unauthorized
from coordinator.services.memo import ClockMemo


def token_digest(token: str) -> str:
    """What is stored of a token: its sha256, so a database leak reveals no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


def register(session: Session, *, runtime: str, sdk_version: str, now: float) -> tuple[str, str]:
    """Create a device; return its id and its bearer token (shown once, never stored)."""
    device_id = str(uuid.uuid4())
    token = secrets.token_urlsafe(32)
    session.add(
        Device(
            id=device_id,
            token_sha256=token_digest(token),
            registered_at=now,
            last_seen_at=now,
            runtime=runtime,
            sdk_version=sdk_version,
        )
    )
    session.flush()
    return device_id, token


# How stale ``last_seen_at`` may get before a request refreshes it. Pace steering counts the
# devices seen within the longest retry window (an hour by default), so a minute is plenty, and
# it spares nearly every request a write.
LAST_SEEN_RESOLUTION = 60.0


def authenticate(session: Session, token: str) -> Device:
    """The device holding ``token``; :class:`Unauthorized` for an unknown one."""
    device = session.scalar(select(Device).where(Device.token_sha256 == token_digest(token)))
    if device is None:
        raise Unauthorized("unknown device token; register again to get one")
    return device


def needs_seen(device: Device, now: float) -> bool:
    """Whether ``device.last_seen_at`` is old enough to be worth a write."""
    return now - device.last_seen_at >= LAST_SEEN_RESOLUTION


def mark_seen(session: Session, device_id: str, *, now: float) -> None:
    """Record that the device made a request at ``now``."""
    session.execute(update(Device).where(Device.id == device_id).values(last_seen_at=now))


_seen = ClockMemo[int](LAST_SEEN_RESOLUTION)


def seen_within(session: Session, window: float, *, now: float) -> int:
    """How many devices made a request in the last ``window`` seconds (as of ≤ a minute ago).

    Counting is a range scan of ``ix_devices_last_seen_at`` (its cost at 10^5 and 10^6 devices
    is in benchmarks/RESULTS.md), and ``last_seen_at`` itself moves only once a minute, so a
    count younger than that is as good as a fresh one.
    """

    def count(s: Session) -> int:
        since = now - window
        return s.scalar(select(func.count(Device.id)).where(Device.last_seen_at >= since)) or 0

    return _seen.get(session, window, count, now=now)
