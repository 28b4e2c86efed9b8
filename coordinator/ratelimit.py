"""Per-device token-bucket rate limits: in process memory (the default) or shared in Redis.

:class:`RateLimiter` keeps its buckets in the process, so with several uvicorn workers (or
replicas) each holds its own and the effective limit is the configured one times their number.
:class:`RedisRateLimiter` keeps one bucket per device in Redis, updated by one Lua script (atomic
on the server), so every worker and replica pointed at the same Redis charges one budget. Both
run on the injected clock's ``now``; :func:`make_rate_limiter` picks one from the settings.
Either guards against runaway devices, not against an attacker.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import TYPE_CHECKING, Protocol

from coordinator.errors import RateLimited

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)


class DeviceRateLimit(Protocol):
    """What the API asks of a rate limiter."""

    def charge(self, key: str, *, now: float) -> None:
        """Take one token for ``key``; :class:`RateLimited` if none is left."""


def _refused(capacity: float, wait: float) -> RateLimited:
    return RateLimited(
        f"more than {int(capacity)} requests a minute; retry in {wait:.1f} s", retry_after=wait
    )


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
                raise _refused(self.capacity, (1.0 - tokens) / self.rate)
            if len(self._buckets) >= self.max_devices and key not in self._buckets:
                self._buckets.clear()  # bounded memory; forgetting only ever forgives
            self._buckets[key] = (tokens - 1.0, now)


# The same bucket as RateLimiter's, read, refilled and charged in one script: Redis runs a
# script atomically, so two workers charging one device at once cannot both spend its last
# token. Numbers go back as strings (Redis would truncate a Lua number reply to an integer).
# A clock behind the bucket's (a worker whose clock lags) refills nothing rather than draining.
# The key expires once the bucket would be full again: forgetting it then changes nothing.
_CHARGE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1])
local at = tonumber(bucket[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
if tokens < 1 then
  return tostring((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'at', tostring(math.max(now, at)))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return ''
"""


class RedisRateLimiter:
    """Allow ``per_minute`` requests per device per minute across every process on one Redis.

    ``url`` is a Redis URL (``redis://host:6379/0``); keys are ``prefix`` + the device id. If
    Redis cannot be reached the request is let through and a warning logged: a rate limit
    protects the service from runaway devices, and an outage of it should not refuse the whole
    fleet. Worker clocks should agree (NTP); a skew of s seconds shifts a refill by at most s.
    """

    def __init__(
        self,
        url: str,
        per_minute: int,
        *,
        prefix: str = "fedge:rate:",
        client: Redis | None = None,
    ) -> None:
        import redis

        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.prefix = prefix
        self._redis: Redis = client or redis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._script = self._redis.register_script(_CHARGE)
        self._errors = redis.RedisError
        self._ttl = math.ceil(self.capacity / self.rate) + 1

    def charge(self, key: str, *, now: float) -> None:
        """Take one token for ``key``; :class:`RateLimited` if none is left."""
        args: list[str | int] = [repr(self.capacity), repr(self.rate), repr(now), self._ttl]
        try:
            wait = self._script(keys=[self.prefix + key], args=args)
        except self._errors as error:
            log.warning("rate limit not charged: Redis unreachable (%s)", error)
            return
        if wait:
            raise _refused(self.capacity, float(wait))

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


def make_rate_limiter(per_minute: int, url: str | None = None) -> DeviceRateLimit:
    """The shared Redis limiter at ``url``, or the in-process one when ``url`` is None."""
    if url is None:
        return RateLimiter(per_minute)
    return RedisRateLimiter(url, per_minute)
