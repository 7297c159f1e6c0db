"""The CRM contract against the embedded CRM in Redis (a real Redis server)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from crm_bridge import RedisCrm
from crm_bridge.contract import PIPELINES, CrmContract


class TestRedisContract(CrmContract):
    @pytest.fixture
    async def crm(self, redis: Redis) -> RedisCrm:
        return RedisCrm(redis, pipelines=PIPELINES)
