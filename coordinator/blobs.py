"""Content-addressed blob store inside the database, so blobs commit with the rows naming them."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.db.models import Blob
from coordinator.errors import NotFound


def put_blob(session: Session, data: bytes, *, now: float, digest: str | None = None) -> str:
    """Store ``data`` under its sha256 (a no-op if present) and return the digest.

    Pass ``digest`` when the caller has already hashed ``data``, to hash it once.
    """
    digest = digest or hashlib.sha256(data).hexdigest()
    if session.get(Blob, digest) is None:
        session.add(Blob(sha256=digest, size=len(data), data=data, created_at=now))
        session.flush()
    return digest


def get_blob(session: Session, digest: str) -> bytes:
    """The bytes stored under ``digest``; :class:`NotFound` if none."""
    data = session.scalar(select(Blob.data).where(Blob.sha256 == digest))
    if data is None:
        raise NotFound(f"no blob {digest}")
    return bytes(data)
