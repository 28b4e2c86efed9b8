"""Device registration and bearer-token authentication."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.db.models import Device
from coordinator.errors import Unauthorized


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


def authenticate(session: Session, token: str, *, now: float) -> Device:
    """The device holding ``token``; :class:`Unauthorized` for an unknown one."""
    device = session.scalar(select(Device).where(Device.token_sha256 == token_digest(token)))
    if device is None:
        raise Unauthorized("unknown device token; register again to get one")
    device.last_seen_at = now
    return device
