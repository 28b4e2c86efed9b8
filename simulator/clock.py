"""The run's clocks: virtual time against the in-process coordinator, wall time against a live one.

Both are :mod:`fedge.clock` clocks (the coordinator and the device session read them through
``now()``) that the event loop also moves: ``advance_to(t)`` before it handles an event at ``t``.
Virtual time jumps there at once (SimPy's ``env.now``); wall time waits for it (SimPy's ``rt``).
"""

from __future__ import annotations

import time
from typing import Protocol

from fedge.clock import ManualClock, SystemClock

START = 1_699_920_000.0  # a midnight (UTC), so virtual hour h of the run is hour h of the day


class RunClock(Protocol):
    """A clock the event loop drives: it reads the time and moves to each event's."""

    def now(self) -> float:
        """The current time in seconds."""
        ...

    def advance_to(self, when: float) -> None:
        """Return once the time is ``when`` (or later)."""
        ...


class VirtualClock(ManualClock):
    """Virtual time: the clock jumps to each event, and never back."""

    def __init__(self, start: float = START) -> None:
        super().__init__(start)

    def advance_to(self, when: float) -> None:
        """Jump to ``when``; a time already past leaves the clock where it is."""
        self.set(max(when, self.now()))


class WallClock(SystemClock):
    """Real time, for a live server: events wait for the wall clock to reach them."""

    def advance_to(self, when: float) -> None:
        """Sleep until ``when`` (at once if the loop is behind)."""
        delay = when - time.time()
        if delay > 0:
            time.sleep(delay)
