"""``redis_cluster`` as configured (not through the tier's fixture): the clients it opens."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bot.config import ConfigError, load_config
from bot.server.services import open_services
from bot.store.clusterclient import ClusterRespClient
from tests.server.conftest import FLOWS, NO_AUTOMATIONS


async def test_the_environment_variable_opens_cluster_clients_from_any_node(redis: Redis, redis_url: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # not the tier's fixture: the configuration alone decides
    config = load_config(env={"SALESBOT_REDIS_URL": redis_url, "SALESBOT_REDIS_CLUSTER": "1",
                              "SALESBOT_FLOWS_DIR": str(FLOWS), "SALESBOT_AUTOMATIONS_DIR": str(NO_AUTOMATIONS),
                              "SALESBOT_ADMIN_TOKEN": "t"})
    assert config.redis_cluster is True
    async with open_services(config, start_hub=False) as svc:
        assert isinstance(svc.redis, RedisCluster)
        assert isinstance(svc.store.fast, ClusterRespClient)
        assert len(await svc.bots.ids()) > 0  # the flows were uploaded through the cluster


def test_a_cluster_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="redis_cluster needs redis_url"):
        load_config(env={"SALESBOT_REDIS_CLUSTER": "1"})
