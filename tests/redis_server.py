"""The Redis that the shared rate limit tests use: skipped on a user's machine without one,
required on CI (``CI`` set), as :mod:`tests.databases` does for PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REDIS_URL = os.environ.get("FEDGE_TEST_REDIS", "redis://127.0.0.1:6379/15")


def redis_available() -> bool:
    """Whether a Redis server answers PING at :data:`REDIS_URL`."""
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def require_redis() -> None:
    """Skip without Redis on a user's machine; fail on CI, where it must run."""
    if redis_available():
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but Redis is unreachable at {REDIS_URL}")
    pytest.skip(f"Redis is not reachable at {REDIS_URL} (set FEDGE_TEST_REDIS)")


@contextmanager
def fresh_prefix() -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    import redis

    require_redis()
    prefix = f"fedge-test:{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        with redis.Redis.from_url(REDIS_URL) as client:
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
