"""Per-process memos: slow aggregate queries that pace steering reads, and immutable rows.

A refused check-in is the most common request a coordinator serves; sizing its retry window
reads how many devices were seen lately and how long tasks take. Both move slowly, so a value
younger than ``ttl`` clock seconds serves (:class:`ClockMemo`). Those memos are hints for
pacing, never state — every worker computes its own, and a restart simply recomputes.

Plans and versions never change once written, and every check-in and upload reads them:
:class:`ImmutableRows` keeps them by primary key, and :class:`BlobCache` keeps the bytes a
download serves by their sha256. An entry is published only when the transaction that read the
row commits, so a row written by a transaction that then rolls back (its id free to be reused)
never leaves a ghost behind.

Everything here is per engine: a session bound to a bare connection (a test's rolled-back outer
transaction) gets no memo, unless the connection is marked :data:`SHARED` (the simulator's one
connection, see ``simulator/inprocess.py``), whose owner calls :func:`forget` if it rolls back.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, event, inspect
from sqlalchemy.orm import Session, make_transient_to_detached

from coordinator.db.blobs import get_blob
from coordinator.db.models import Base

T = TypeVar("T")
M = TypeVar("M", bound=Base)

# Set in ``Connection.info`` by the owner of a connection that every session of a process
# shares (one outer transaction it commits itself): memos then serve it as they serve an engine.
SHARED = "fedge_shared_connection"
_PENDING = "fedge_memo_pending"


def scope_of(session: Session) -> Engine | None:
    """The engine whose memos serve ``session``, or None where none may (a test connection)."""
    return scope_of_bind(session.get_bind())


def scope_of_bind(bind: object) -> Engine | None:
    """:func:`scope_of` for what a session factory is bound to."""
    if isinstance(bind, Engine):
        return bind
    if isinstance(bind, Connection) and bind.info.get(SHARED):
        return bind.engine
    return None


class ClockMemo(Generic[T]):
    """``compute(session)`` per engine and key, reused for ``ttl`` seconds of the caller's clock."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._values: weakref.WeakKeyDictionary[Engine, dict[Hashable, tuple[float, T]]] = (
            weakref.WeakKeyDictionary()
        )

    def get(
        self, session: Session, key: Hashable, compute: Callable[[Session], T], *, now: float
    ) -> T:
        """The memoised value for ``key``, computed afresh when older than ``ttl``."""
        engine = scope_of(session)
        if engine is None:  # bound to a connection (tests): no memo
            return compute(session)
        with self._lock:
            entry = self._values.get(engine, {}).get(key)
        if entry is not None and 0 <= now - entry[0] < self.ttl:
            return entry[1]
        value = compute(session)
        with self._lock:
            self._values.setdefault(engine, {})[key] = (now, value)
        return value


class CommittedCache:
    """A least-recently-used map per engine, bounded by a total cost; entries kept on commit.

    For values that never change once committed: :meth:`publish_after_commit` holds a value
    back until the session's transaction commits, and drops it if the session rolls back.
    """

    def __init__(self, capacity: int, cost: Callable[[Any], int]) -> None:
        self.capacity = capacity
        self._cost = cost
        self._lock = threading.Lock()
        self._entries: weakref.WeakKeyDictionary[Engine, OrderedDict[Hashable, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._used: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()
        _CACHES.add(self)

    def lookup(self, engine: Engine, key: Hashable) -> Any | None:
        """The value kept for ``key``, or None."""
        with self._lock:
            entries = self._entries.get(engine)
            if entries is None or key not in entries:
                return None
            entries.move_to_end(key)
            return entries[key]

    def publish_after_commit(
        self, session: Session, engine: Engine, key: Hashable, value: Any
    ) -> None:
        """Keep ``value`` once ``session``'s transaction commits; forget it if it rolls back."""
        session.info.setdefault(_PENDING, []).append((self, engine, key, value))

    def store(self, engine: Engine, key: Hashable, value: Any) -> None:
        """Keep ``value`` now (the caller knows it is committed); the oldest go past capacity."""
        cost = self._cost(value)
        if cost > self.capacity:
            return
        with self._lock:
            entries = self._entries.setdefault(engine, OrderedDict())
            used = self._used.get(engine, 0)
            if key in entries:
                used -= self._cost(entries.pop(key))
            entries[key] = value
            used += cost
            while used > self.capacity:
                _, evicted = entries.popitem(last=False)
                used -= self._cost(evicted)
            self._used[engine] = used

    def clear(self, engine: Engine) -> None:
        """Forget everything kept for ``engine``."""
        with self._lock:
            self._entries.pop(engine, None)
            self._used.pop(engine, None)


_CACHES: weakref.WeakSet[CommittedCache] = weakref.WeakSet()


class ImmutableRows(Generic[M]):
    """Rows of ``model`` that never change once committed, by primary key, at most ``size``.

    :meth:`get` answers as ``session.get`` does — an object of ``session``, persistent — but
    from memory after the first committed read: no statement at all. Columns named in
    ``mutable`` are not remembered: the object answers them unloaded, so reading one loads it
    fresh from the database (a version's registry stage changes; its weights never do).
    """

    def __init__(self, model: type[M], *, size: int = 4096, mutable: tuple[str, ...] = ()) -> None:
        self.model = model
        self._columns = [
            attr.key for attr in inspect(model).column_attrs if attr.key not in mutable
        ]
        self._rows = CommittedCache(size, lambda _: 1)

    def get(self, session: Session, key: Any) -> M | None:
        """The row with primary key ``key`` (a tuple for a composite key), or None."""
        engine = scope_of(session)
        if engine is None:
            return session.get(self.model, key)
        values = self._rows.lookup(engine, key)
        if values is None:
            row = session.get(self.model, key)
            if row is not None:
                snapshot = {name: copy.deepcopy(getattr(row, name)) for name in self._columns}
                self._rows.publish_after_commit(session, engine, key, snapshot)
            return row
        identity = inspect(self.model).identity_key_from_primary_key(
            key if isinstance(key, tuple) else (key,)
        )
        held = session.identity_map.get(identity)
        if held is not None:
            return held  # type: ignore[return-value]
        row = self.model(**copy.deepcopy(values))  # a caller may not share our dicts
        make_transient_to_detached(row)  # as though just loaded: persistent once added, clean
        session.add(row)
        return row


class BlobCache:
    """Blobs' bytes by sha256, at most ``capacity`` bytes per engine: immutable by construction."""

    def __init__(self, capacity: int) -> None:
        self._blobs = CommittedCache(capacity, len)

    def get(self, session: Session, digest: str) -> bytes:
        """The bytes stored under ``digest`` (:func:`get_blob`), from memory when held."""
        engine = scope_of(session)
        if engine is None:
            return get_blob(session, digest)
        data: bytes | None = self._blobs.lookup(engine, digest)
        if data is None:
            data = get_blob(session, digest)
            self._blobs.publish_after_commit(session, engine, digest, data)
        return data


def forget(engine: Engine) -> None:
    """Drop every immutable entry of ``engine``: its shared connection's transaction rolled back."""
    for cache in list(_CACHES):
        cache.clear(engine)


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    for cache, engine, key, value in session.info.pop(_PENDING, ()):
        cache.store(engine, key, value)


@event.listens_for(Session, "after_soft_rollback")
def _discard(session: Session, _previous: object) -> None:
    # Any rollback, a savepoint's included: what was read since may have been its own writes.
    session.info.pop(_PENDING, None)
