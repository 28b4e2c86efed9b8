"""Per-device token-bucket rate limit, in process memory and on the injected clock.

With several workers each holds its own buckets, so the effective limit is the configured one
times the number of workers; it guards against runaway devices, not against an attacker.
"""

from __future__ import annotations

import threading

from coordinator.errors import RateLimited


class RateLimiter:
    """Allow ``per_minute`` requests per device per minute, with bursts up to that number."""

    def __init__(self, per_minute: int, *, max_devices: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_devices = max_devices
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def charge(self, key: str, *, now: float) -> None:
        """Take one token for ``key``; :class:`RateLimited` if none is left."""
        with self._lock:
            tokens, at = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                wait = (1.0 - tokens) / self.rate
                raise RateLimited(
                    f"more than {int(self.capacity)} requests a minute; retry in {wait:.1f} s",
                    retry_after=wait,
                )
            if len(self._buckets) >= self.max_devices and key not in self._buckets:
                self._buckets.clear()  # bounded memory; forgetting only ever forgives
            self._buckets[key] = (tokens - 1.0, now)
