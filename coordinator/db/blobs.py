"""Content-addressed blob store inside the database, so blobs commit with the rows naming them."""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from sqlalchemy import Insert, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coordinator.db.models import Blob, Update, Version
from coordinator.errors import NotFound


def put_blob(session: Session, data: bytes, *, now: float, digest: str | None = None) -> str:
    """Store ``data`` under its sha256 (a no-op if present) and return the digest.

    Pass ``digest`` when the caller has already hashed ``data``, to hash it once.

    One statement, whatever is stored already: nothing is read first (a read would fetch the
    whole row, a model's worth of bytes, only to learn that the insert has nothing to do).
    """
    digest = digest or hashlib.sha256(data).hexdigest()
    row = {"sha256": digest, "size": len(data), "data": data, "created_at": now}
    session.execute(_upsert(session).values(**row))
    return digest


def _upsert(session: Session) -> Insert:
    """``INSERT … ON CONFLICT``: a present row stays, unless its bytes were released.

    Two transactions may store the same bytes at once (two workers, identical updates): the
    second insert must wait for the first and then do nothing, not fail on the key. A row whose
    bytes :func:`release` freed gets them back (the same bytes again: keep them this time).
    """
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(Blob)
    released = and_(Blob.size > 0, func.length(Blob.data) == 0)
    upsert: Insert = statement.on_conflict_do_update(
        index_elements=["sha256"], set_={"data": statement.excluded.data}, where=released
    )
    return upsert


def release(session: Session, digests: Collection[str]) -> None:
    """Free the bytes of folded updates' blobs; the rows stay (foreign keys, digests, sizes).

    An update's delta is read once, when it is folded into a version; keeping every delta
    would grow the database by one model per update, forever. A digest that a pending update
    or any version still names (identical bytes can arrive twice) keeps its bytes.
    """
    if not digests:
        return
    still_read = set(
        session.scalars(
            select(Update.delta_sha256).where(
                Update.version.is_(None), Update.delta_sha256.in_(digests)
            )
        )
    ) | set(
        session.scalars(select(Version.weights_sha256).where(Version.weights_sha256.in_(digests)))
    )
    freed = set(digests) - still_read
    if freed:
        session.execute(
            update(Blob)
            .where(Blob.sha256.in_(freed))
            .values(data=b"")
            .execution_options(synchronize_session=False)
        )


def get_blob(session: Session, digest: str) -> bytes:
    """The bytes stored under ``digest``; :class:`NotFound` if none."""
    row = session.execute(select(Blob.size, Blob.data).where(Blob.sha256 == digest)).first()
    if row is None or _released(row.size, row.data):
        raise NotFound(f"no blob {digest}")
    return bytes(row.data)


def _released(size: int, data: bytes) -> bool:
    return size > 0 and len(data) == 0
