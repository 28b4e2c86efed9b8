"""The one source of time: every lease, deadline, retry window and rate limit reads a Clock.

The coordinator and the device runner take a :class:`Clock`; production passes
:class:`SystemClock`, tests pass :class:`ManualClock` and advance it instead of sleeping, and the
simulator passes one driven by its discrete-event loop (as SimPy's ``env.now`` is its only time).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Seconds since the epoch, as a float."""

    def now(self) -> float:
        """The current time in seconds."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()


class ManualClock:
    """A clock that moves only when told to; thread-safe."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        """The time last set."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += seconds

    def set(self, when: float) -> None:
        """Jump to ``when``, which may not be earlier than now."""
        with self._lock:
            if when < self._now:
                raise ValueError("a clock does not go backwards")
            self._now = when
