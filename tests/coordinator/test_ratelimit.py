"""The per-device rate limit: one contract for the in-process and the Redis-backed limiter."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from coordinator.errors import RateLimited
from coordinator.ratelimit import (
    DeviceRateLimit,
    RateLimiter,
    RedisRateLimiter,
    make_rate_limiter,
)
from tests.redis_server import REDIS_URL, fresh_prefix

NOW = 1_000_000.0
Make = Callable[[int], DeviceRateLimit]


def spend(limiter: DeviceRateLimit, key: str, count: int, *, now: float = NOW) -> int:
    """Charge ``key`` ``count`` times; how many charges were allowed."""
    allowed = 0
    for _ in range(count):
        try:
            limiter.charge(key, now=now)
        except RateLimited:
            continue
        allowed += 1
    return allowed


class RateLimitContract:
    """What every rate limiter does; subclasses provide ``make(per_minute)``."""

    @pytest.fixture
    def make(self) -> Make:
        raise NotImplementedError

    def test_a_burst_up_to_the_limit_is_allowed_and_the_next_request_refused(self, make):
        limiter = make(10)

        allowed = spend(limiter, "device-a", 10)

        assert allowed == 10
        with pytest.raises(RateLimited, match="more than 10 requests a minute") as refused:
            limiter.charge("device-a", now=NOW)
        assert refused.value.retry_after == pytest.approx(6.0)

    def test_tokens_come_back_at_the_configured_rate(self, make):
        limiter = make(60)  # one a second
        spend(limiter, "device-a", 60)

        assert spend(limiter, "device-a", 5, now=NOW + 2.5) == 2

    def test_a_full_minute_restores_the_whole_burst(self, make):
        limiter = make(10)
        spend(limiter, "device-a", 10)

        assert spend(limiter, "device-a", 20, now=NOW + 60.0) == 10

    def test_each_device_has_its_own_budget(self, make):
        limiter = make(3)
        spend(limiter, "device-a", 3)

        assert spend(limiter, "device-b", 5) == 3

    def test_a_clock_behind_the_bucket_refills_nothing(self, make):
        limiter = make(60)
        spend(limiter, "device-a", 60)

        assert spend(limiter, "device-a", 1, now=NOW - 30.0) == 0


class TestInProcessRateLimiter(RateLimitContract):
    @pytest.fixture
    def make(self) -> Make:
        return RateLimiter


class TestRedisRateLimiter(RateLimitContract):
    @pytest.fixture
    def prefix(self) -> Iterator[str]:
        with fresh_prefix() as prefix:
            yield prefix

    @pytest.fixture
    def make(self, prefix: str) -> Iterator[Make]:
        made: list[RedisRateLimiter] = []

        def make(per_minute: int) -> RedisRateLimiter:
            made.append(RedisRateLimiter(REDIS_URL, per_minute, prefix=prefix))
            return made[-1]

        yield make
        for limiter in made:
            limiter.close()

    def test_two_workers_share_one_budget(self, make):
        worker_1, worker_2 = make(10), make(10)

        allowed = spend(worker_1, "device-a", 6) + spend(worker_2, "device-a", 6)

        assert allowed == 10
        with pytest.raises(RateLimited):
            worker_1.charge("device-a", now=NOW)

    def test_an_unreachable_redis_lets_requests_through(self, caplog):
        limiter = RedisRateLimiter("redis://127.0.0.1:1/0", 1)

        allowed = spend(limiter, "device-a", 3)

        assert allowed == 3
        assert "Redis unreachable" in caplog.text


def test_the_in_process_limiter_is_the_default():
    assert isinstance(make_rate_limiter(600), RateLimiter)


def test_a_rate_limit_url_selects_the_shared_limiter():
    limiter = make_rate_limiter(600, REDIS_URL)

    assert isinstance(limiter, RedisRateLimiter)
    limiter.close()
