"""A real redis-server for the `redis` tier: one per module, flushed before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis.server import RedisServer, running_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis_server.client() as client:
        client.flushdb()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server this test alone may kill or freeze."""
    with running_redis(tmp_path_factory.mktemp("redis-own")) as server:
        yield server
