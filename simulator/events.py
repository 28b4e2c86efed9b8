"""A discrete-event queue with a cheap waiting room for parked devices.

An :class:`Event` is a time, an :class:`EventKind`, a device and what the event carries. Busy
devices' next events sit in a binary heap ordered by (time, sequence), so equal times are served
first come, first served and a run is deterministic (the sequence is unique: nothing else of an
event is ever compared). Idle devices — nearly all of a large
population, asleep until their retry window or their next eligibility window — are not in the
heap: each is an index in a per-minute bucket (4 bytes) and its wake time in one float64 array
(8 bytes). A bucket's devices enter the heap only when the clock reaches its minute.
"""

from __future__ import annotations

import enum
import heapq
import math
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

BUCKET_SECONDS = 60.0
RUN = -1  # the device of the run's own events (lease sweep, evaluation)


class EventKind(enum.Enum):
    """What happens at an event."""

    WAKE = enum.auto()  # a parked device wakes (retry window over, or its eligibility window)
    RESUME = enum.auto()  # a device's action is done: its session gets the result
    TRAINED = enum.auto()  # a device's modelled training time has passed: collect the result
    ARRIVE = enum.auto()  # an upload's transfer ends: it reaches the server
    DROP = enum.auto()  # a task's fate strikes: the device vanishes mid-phase
    BEAT = enum.auto()  # a heartbeat is due mid-training
    SWEEP = enum.auto()  # the in-process coordinator's lease sweep
    EVALUATE = enum.auto()  # the run scores the current version
    EVALUATED = enum.auto()  # a device's modelled evaluation time has passed: collect metrics


@dataclass(frozen=True, slots=True)
class Event:
    """One event: at ``when``, ``kind`` happens to ``device`` (``RUN`` for the run's own)."""

    when: float
    kind: EventKind
    device: int = RUN
    payload: Any = None


class EventQueue:
    """Events for busy devices plus parked devices' wake-ups, in time order."""

    def __init__(self, num_devices: int) -> None:
        self._heap: list[tuple[float, int, Event]] = []
        self._seq = 0
        self.wake_at = np.full(num_devices, math.inf, dtype=np.float64)
        self._buckets: dict[int, array[int]] = {}
        self._next_bucket = math.inf  # smallest bucket key not yet opened

    def push(self, event: Event) -> None:
        """Schedule ``event``; among events at the same time, it comes after those pushed before."""
        heapq.heappush(self._heap, (event.when, self._seq, event))
        self._seq += 1

    def park(self, device: int, when: float) -> None:
        """Put ``device`` to sleep until ``when``; it comes back as a ``WAKE`` event."""
        self.wake_at[device] = when
        key = int(when // BUCKET_SECONDS)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = array("I")
        bucket.append(device)
        self._next_bucket = min(self._next_bucket, key)

    def pop(self) -> Event | None:
        """The earliest event, or None when none is left."""
        while True:
            head = self._heap[0][0] if self._heap else math.inf
            if self._next_bucket * BUCKET_SECONDS <= head and self._buckets:
                self._open()
                continue
            if not self._heap:
                return None
            return heapq.heappop(self._heap)[2]

    def _open(self) -> None:
        key = int(self._next_bucket)
        bucket = self._buckets.pop(key, array("I"))
        devices = np.frombuffer(bucket, dtype=np.uint32) if len(bucket) else np.zeros(0, np.uint32)
        times = self.wake_at[devices]
        for i in np.lexsort((devices, times)):
            device = int(devices[i])
            self.push(Event(float(times[i]), EventKind.WAKE, device))
        self._next_bucket = min(self._buckets) if self._buckets else math.inf

    @property
    def parked(self) -> int:
        """Devices waiting in buckets."""
        return sum(len(b) for b in self._buckets.values())

    def __len__(self) -> int:
        return len(self._heap) + self.parked
