"""Per-process memos of slow aggregate queries that pace steering reads on every refusal.

A refused check-in is the most common request a coordinator serves; sizing its retry window
reads how many devices were seen lately and how long tasks take. Both move slowly, so a value
younger than ``ttl`` clock seconds serves. Memos are per engine and per process: they are hints
for pacing, never state — every worker computes its own, and a restart simply recomputes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

T = TypeVar("T")


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
        engine = session.get_bind()
        if not isinstance(engine, Engine):  # bound to a connection (tests): no memo
            return compute(session)
        with self._lock:
            entry = self._values.get(engine, {}).get(key)
        if entry is not None and 0 <= now - entry[0] < self.ttl:
            return entry[1]
        value = compute(session)
        with self._lock:
            self._values.setdefault(engine, {})[key] = (now, value)
        return value
